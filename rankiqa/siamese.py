"""The Siamese network: one backbone shared by every image of a ranking batch.

Two equivalent forms:

- `one_pass_scores`, RankIQA's efficient form: the whole references x levels batch goes through
  the network once and the scores are reshaped to ``[references, levels]``; every pair inside a
  reference then comes from that one forward pass.
- `two_branch_scores`, the classic form of a RankIQA Siamese network: two towers on two
  inputs with ``scope.reuse_variables()`` between them, so both share one set of weights. It
  pays one forward pass per image of every pair; kept for comparison (benchmark P1) and for
  pairwise data.
"""

from rankiqa.compat import tf


def one_pass_scores(network_fn, images, levels, is_training):
    """Scores a rank batch in one pass.

    Args:
      network_fn: from `rankiqa.nets.get_network_fn`.
      images: preprocessed ``[references * levels, H, W, 3]``, level-major per reference.
      levels: levels per reference.
      is_training: batch norm mode.

    Returns:
      (scores ``[references, levels]``, end_points).
    """
    score, end_points = network_fn(images, is_training=is_training)
    return tf.reshape(score, [-1, levels], name="rank_scores"), end_points


def two_branch_scores(network_fn, images_1, images_2, is_training):
    """Scores two inputs with two towers sharing one set of variables.

    Re-entering the current variable scope keeps the variable names those of a single tower
    (``resnet_v2/...``), so checkpoints of both forms are interchangeable.

    Returns:
      (scores_1 ``[B]``, scores_2 ``[B]``).
    """
    with tf.variable_scope(tf.get_variable_scope()) as scope:
        out_1, _ = network_fn(images_1, is_training=is_training)
        scope.reuse_variables()
        out_2, _ = network_fn(images_2, is_training=is_training)
    return out_1, out_2
