"""The one-score quality heads every backbone ends in, and the pooled statistics they read.

A *pooled* head reads the per-channel mean and standard deviation of several blocks' outputs:
low blocks see noise and blur, high blocks content, and quality needs both (for hed-vgg16 on
BIQ2021, frozen features + ridge: 0.709 cross-validated SROCC over every block against ~0.66
for the last block's mean). The statistics span orders of magnitude across channels, so the
head standardises them (a batch norm without scale) before its one linear score: the probe's
ridge fit and LP-FT then see the same well-conditioned inputs for every backbone.
"""

from rankiqa.compat import slim, tf

HEAD_SCOPE = "logits"


def mean_std(blocks, log_offset=None):
    """``[B, 1, 1, 2 * sum(C)]``: each block's channel means and standard deviations.

    Args:
      blocks: activations ``[B, H, W, C]`` (or tokens ``[B, N, C]``), any sizes.
      log_offset: if set, the log of (statistic + offset): for ReLU outputs, whose statistics
        are heavy-tailed; None for outputs of either sign (EfficientNet's linear projections,
        a ViT's tokens).
    """
    pooled = []
    for block in blocks:
        axes = list(range(1, block.shape.ndims - 1))
        mean, variance = tf.nn.moments(block, axes=axes)
        pooled += [mean, tf.sqrt(variance + 1e-6)]
    features = tf.concat(pooled, axis=-1)[:, None, None, :]
    if log_offset is not None:
        features = tf.math.log(features + log_offset)
    return features


def pick_blocks(end_points, names, net_name):
    """The activations of the end points `names` (``net.pooled_blocks``), checked."""
    unknown = [n for n in names if n not in end_points]
    if unknown:
        from rankiqa.errors import InputError
        raise InputError(f"net.pooled_blocks: {net_name} has no block {unknown[0]!r}; choose "
                         f"from {sorted(end_points)}")
    return [end_points[n] for n in names]


def quality_head(features, is_training, normalize):
    """One linear score ``[B]`` from ``[B, 1, 1, d]`` features, under ``<scope>/logits``.

    With `normalize`, the features first pass a batch norm (``logits/feature_norm``, no scale):
    its moving statistics standardise them at inference, and `finetune.frozen_batch_norm` keeps
    them as the probe saw them.
    """
    with tf.variable_scope(HEAD_SCOPE):
        if normalize:
            features = slim.batch_norm(features, decay=0.9, center=True, scale=False,
                                       is_training=is_training, scope="feature_norm")
        # explicit: a backbone's arg scope may drop biases (batch-normed convs) or add decay
        net = slim.conv2d(features, 1, [1, 1], activation_fn=None, normalizer_fn=None,
                          biases_initializer=tf.zeros_initializer(), weights_regularizer=None,
                          scope=tf.get_variable_scope())
    return tf.reshape(net, [-1], name="score")
