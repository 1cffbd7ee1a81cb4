"""Ranking and regression losses.

Stage one sees no quality labels, only orderings: within one reference image, level 0 (pristine)
is better than level 1, which is better than level 2, and so on. Scores arrive as
``scores: [references, levels]``, higher meaning better quality.
"""

import numpy as np

from rankiqa.compat import tf
from rankiqa.errors import InputError


def rank_operator(levels):
    """The levels x (levels-1) pairwise operator of RankIQA's efficient Siamese loss.

    Column j has ``levels-1-j`` at row j and -1 below it, so that
    ``(scores @ op)[:, j] = sum_{i>j} (s_j - s_i)``: how far level j beats every worse level.

    Args:
      levels: number of quality levels per reference, >= 2.

    Returns:
      float32 numpy array ``[levels, levels-1]``.

    Raises:
      ValueError: levels < 2.
    """
    if int(levels) != levels or levels < 2:
        raise InputError(f"levels must be an integer >= 2, got {levels!r}")
    op = np.zeros((levels, levels - 1), dtype=np.float32)
    for j in range(levels - 1):
        op[j, j] = levels - 1 - j
        op[j + 1:, j] = -1.0
    return op


def rank_hinge_loss(scores, margin, name="rank_hinge_loss"):
    """The operator form: ``mean(max(0, margin - scores @ rank_operator(levels)))``.

    Args:
      scores: ``[references, levels]`` float tensor, levels ordered best first; levels static.
      margin: hinge margin (the RankIQA write-up uses 100).

    Returns:
      scalar tensor.
    """
    with tf.name_scope(name):
        levels = scores.shape.as_list()[-1]
        op = tf.constant(rank_operator(levels))
        return tf.reduce_mean(tf.nn.relu(margin - tf.matmul(scores, op)))


def pair_indices(levels):
    """Row and column indices ``(i, j)`` of every pair i < j inside one reference's levels."""
    return np.triu_indices(levels, k=1)


def pairwise_hinge_loss(scores, margin, name="pairwise_hinge_loss"):
    """The paper's per-pair hinge: mean over every pair i<j of ``max(0, margin - (s_i - s_j))``.

    Vectorised: all differences ``[references, levels, levels]`` at once, then the strict upper
    triangle gathered, so the cost is one tensor op per graph, not one per pair.

    Args:
      scores: ``[references, levels]`` float tensor; levels static.
      margin: hinge margin.

    Returns:
      scalar tensor.
    """
    with tf.name_scope(name):
        levels = scores.shape.as_list()[-1]
        i, j = pair_indices(levels)
        better = tf.gather(scores, i, axis=1)
        worse = tf.gather(scores, j, axis=1)
        return tf.reduce_mean(tf.nn.relu(margin - (better - worse)))


def ranking_accuracy(scores, name="ranking_accuracy"):
    """`rankiqa.metrics.pair_accuracy` in the graph (the training progress line's figure):
    the share of pairs i<j with ``s_i > s_j``, a tie counting half; ``scores: [references,
    levels]``."""
    with tf.name_scope(name):
        levels = scores.shape.as_list()[-1]
        i, j = pair_indices(levels)
        better, worse = tf.gather(scores, i, axis=1), tf.gather(scores, j, axis=1)
        right = tf.cast(tf.greater(better, worse), tf.float32)
        tied = tf.cast(tf.equal(better, worse), tf.float32)
        return tf.reduce_mean(right + 0.5 * tied)


# name -> loss(scores [references, levels], margin); chosen by `train.loss` in the config.
rank_losses_map = {"operator": rank_hinge_loss, "pairwise": pairwise_hinge_loss}


def get_rank_loss_fn(name):
    if name not in rank_losses_map:
        raise InputError(f"unknown ranking loss {name!r}; choose from {sorted(rank_losses_map)}")
    return rank_losses_map[name]


def l2_loss(predictions, targets):
    """The paper's Euclidean loss, as a mean over the batch: ``mean((p - t)^2) / 2``."""
    return tf.reduce_mean(tf.square(predictions - targets)) / 2.0


def l1_loss(predictions, targets):
    return tf.reduce_mean(tf.abs(predictions - targets))


regression_losses_map = {"l2": l2_loss, "l1": l1_loss}


def log_ndtr(x):
    """log Phi(x), finite far into the left tail where float32's erfc underflows (x < -13):
    there the asymptotic series' first terms, within 1 % of the exact value below -5."""
    near = tf.maximum(x, -5.0)  # each branch fed only values it is exact and finite on, so
    far = tf.minimum(x, -5.0)  # tf.where's unused branch gives no NaN gradient
    exact = tf.math.log(0.5 * tf.math.erfc(-near / np.sqrt(2.0)))
    tail = -0.5 * tf.square(far) - tf.math.log(-far) - 0.5 * np.log(2 * np.pi) \
        + tf.math.log1p(-1.0 / tf.square(far))
    return tf.where(x > -5.0, exact, tail)


def thurstone_pair_loss(left, right, outcomes, scale):
    """People's comparisons as a likelihood: the mean negative log-likelihood of `outcomes`
    (1: left chosen, 0: right, 0.5: a tie, half of each) under P(left) = Phi((left - right) /
    `scale`), Thurstone Case V on the scores. A tie pulls the two scores together."""
    d = (left - right) / scale
    return -tf.reduce_mean(outcomes * log_ndtr(d) + (1.0 - outcomes) * log_ndtr(-d))


def get_regression_loss_fn(name):
    if name not in regression_losses_map:
        raise InputError(
            f"unknown regression loss {name!r}; choose from {sorted(regression_losses_map)}")
    return regression_losses_map[name]
