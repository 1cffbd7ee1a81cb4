"""The backbones: a name -> network map over tf_slim.nets, each ending in a one-score head.

Every network keeps slim's contract, ``fn(images, is_training, reuse=None) -> (score, end_points)``
with ``score: [batch]`` (float32) and ``images: [batch, H, W, 3]`` already preprocessed by
``fn.preprocess`` (the network's own input convention, kept with the network so that training,
export and ``predict`` always agree). Each function also carries:

- ``default_image_size``: the crop the network was designed for;
- ``scope``: the variable scope it is built under (``resnet_v2`` for every ResNet, so that
  checkpoints of different depths share names and stage two excludes one head scope);
- ``head_scope``: the one-output quality head (``resnet_v2/logits``), which stage two re-learns.

``end_points["features"]`` is the head's input ``[batch, 1, 1, d]`` (the pooled features the
probe fits the head on).
"""

import functools

from rankiqa.compat import slim, tf
from rankiqa.errors import InputError
from tf_slim.nets import resnet_utils, resnet_v2, vgg

RESNET_SCOPE = "resnet_v2"
VGG_SCOPE = "vgg_16"
# Caffe-VGG convention (BGR order, per-channel ImageNet mean) that VGG weights were trained with.
VGG_BGR_MEAN = (104.007, 116.669, 122.679)


def preprocess_resnet(images):
    """uint8-range RGB ``[B, H, W, 3]`` -> [-1, 1], the slim resnet_v2 ImageNet convention."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def preprocess_vgg(images):
    """uint8-range RGB ``[B, H, W, 3]`` -> BGR minus the Caffe ImageNet mean."""
    bgr = tf.reverse(tf.cast(images, tf.float32), axis=[-1])
    return bgr - tf.constant(VGG_BGR_MEAN, dtype=tf.float32)


def _resnet(blocks, images, is_training, reuse=None):
    # The backbone without classes ends in the global pool; the one-score head is added here,
    # under the name slim would give it (resnet_v2/logits), so the probe reads its input as an
    # end point and checkpoints keep slim's names.
    pooled, end_points = resnet_v2.resnet_v2(
        images, blocks, num_classes=None, is_training=is_training, global_pool=True,
        reuse=reuse, scope=RESNET_SCOPE)
    end_points["features"] = pooled  # [B, 1, 1, C]
    with tf.variable_scope(RESNET_SCOPE, reuse=reuse):
        net = slim.conv2d(pooled, 1, [1, 1], activation_fn=None, normalizer_fn=None,
                          scope="logits")
    # tf_slim's resnet_v2 has no spatial_squeeze: the head returns [B, 1, 1, 1].
    score = tf.reshape(net, [-1], name="score")
    end_points["score"] = score
    return score, end_points


def _resnet_v2_50_blocks():
    block = resnet_v2.resnet_v2_block
    return [block("block1", base_depth=64, num_units=3, stride=2),
            block("block2", base_depth=128, num_units=4, stride=2),
            block("block3", base_depth=256, num_units=6, stride=2),
            block("block4", base_depth=512, num_units=3, stride=1)]


def _resnet_v2_101_blocks():
    block = resnet_v2.resnet_v2_block
    return [block("block1", base_depth=64, num_units=3, stride=2),
            block("block2", base_depth=128, num_units=4, stride=2),
            block("block3", base_depth=256, num_units=23, stride=2),
            block("block4", base_depth=512, num_units=3, stride=1)]


def _resnet_v2_tiny_blocks():
    # The resnet_v2_50 layout at a sixteenth of the width and one unit per block: the same
    # code paths (root block, bottlenecks, shortcuts, batch norm) at ~1,300 img/s on 64² CPU.
    block = resnet_v2.resnet_v2_block
    return [block("block1", base_depth=16, num_units=1, stride=2),
            block("block2", base_depth=16, num_units=1, stride=2),
            block("block3", base_depth=16, num_units=1, stride=2),
            block("block4", base_depth=16, num_units=1, stride=1)]


def resnet_v2_50(images, is_training, reuse=None):
    return _resnet(_resnet_v2_50_blocks(), images, is_training, reuse)


def resnet_v2_101(images, is_training, reuse=None):
    return _resnet(_resnet_v2_101_blocks(), images, is_training, reuse)


def resnet_v2_tiny(images, is_training, reuse=None):
    return _resnet(_resnet_v2_tiny_blocks(), images, is_training, reuse)


def _vgg_16_convs(images):
    """slim's VGG-16 convolution stack with its variable names (``conv1/conv1_1`` ...), inside
    the caller's scope. Returns (last block's output, end_points, [each block's output])."""
    blocks = []
    net = images
    for i, (repeats, depth) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]):
        net = slim.repeat(net, repeats, slim.conv2d, depth, [3, 3], scope=f"conv{i + 1}")
        blocks.append(net)
        if i < 4:  # pool5 would only shrink what the heads pool anyway
            net = slim.max_pool2d(net, [2, 2], scope=f"pool{i + 1}")
    return net, blocks


def _vgg_16_with_head(images, reuse, pool_fn, is_training=False, normalize=False):
    with tf.variable_scope(VGG_SCOPE, "vgg_16", [images], reuse=reuse) as sc:
        end_points_collection = sc.original_name_scope + "_end_points"
        with slim.arg_scope([slim.conv2d, slim.max_pool2d],
                            outputs_collections=end_points_collection):
            net, blocks = _vgg_16_convs(images)
        end_points = slim.utils.convert_collection_to_dict(end_points_collection)
        features = pool_fn(net, blocks)
        end_points["features"] = features
        with tf.variable_scope("logits"):
            if normalize:
                # pooled ReLU statistics span orders of magnitude across channels and blocks;
                # a linear head on them unnormalised does not converge (measured on BIQ2021)
                features = slim.batch_norm(features, decay=0.9, center=True, scale=False,
                                           is_training=is_training, scope="feature_norm")
            net = slim.conv2d(features, 1, [1, 1], activation_fn=None, normalizer_fn=None,
                              weights_regularizer=None, scope=tf.get_variable_scope())
        score = tf.reshape(net, [-1], name="score")
        end_points["score"] = score
        return score, end_points


def vgg_16(images, is_training, reuse=None):
    """slim's VGG-16 convolution stack (same variable names, ``vgg_16/conv1/conv1_1`` ...) with
    a global-average-pooled one-score head in place of fc6-fc8.

    The paper's fc6/fc7 hold 120M parameters, fix the input at 224² and have no pretrained
    weights available offline; pooling the last block keeps every crop size usable.
    """
    del is_training  # no batch norm or dropout in the convolution stack
    return _vgg_16_with_head(
        images, reuse, lambda net, blocks: tf.reduce_mean(net, [1, 2], keepdims=True))


# Pooled ReLU statistics are heavy-tailed (channel means span orders of magnitude); a linear
# head on their logarithm ranks better. Ridge on frozen hed-vgg16 features of BIQ2021 centre
# crops, validation SROCC: 0.657 raw, 0.694 log(x + 0.1), 0.690 with 1e-3, 0.687 with 1.
LOG_OFFSET = 0.1


def _log_mean_std_per_block(net, blocks):
    """``[B, 1, 1, 2 * (64+128+256+512+512)]``: the log of each block's channel means and
    standard deviations. Low blocks see noise and blur, high blocks content: quality needs both."""
    del net  # the last block is in `blocks`
    pooled = []
    for block in blocks:
        mean, variance = tf.nn.moments(block, axes=[1, 2], keepdims=True)
        pooled += [mean, tf.sqrt(variance + 1e-6)]
    return tf.math.log(tf.concat(pooled, axis=-1) + LOG_OFFSET)


def vgg_16_pooled(images, is_training, reuse=None):
    """VGG-16's convolutions with a quality head over every block: the log mean and standard
    deviation of each block's output, concatenated (2,944 features), batch-normalised, then one
    linear score.
    Any crop size works; the head is ``vgg_16/logits``, the scope stage two re-learns."""
    return _vgg_16_with_head(images, reuse, _log_mean_std_per_block, is_training,
                             normalize=True)


def _resnet_arg_scope(weight_decay, batch_norm_decay):
    return resnet_utils.resnet_arg_scope(weight_decay=weight_decay,
                                         batch_norm_decay=batch_norm_decay)


def _vgg_arg_scope(weight_decay, batch_norm_decay):
    del batch_norm_decay  # VGG-16 has no batch norm
    return vgg.vgg_arg_scope(weight_decay=weight_decay)


# name -> (network function, arg scope factory, preprocessing, scope, default image size)
networks_map = {
    "resnet_v2_50": (resnet_v2_50, _resnet_arg_scope, preprocess_resnet, RESNET_SCOPE, 224),
    "resnet_v2_101": (resnet_v2_101, _resnet_arg_scope, preprocess_resnet, RESNET_SCOPE, 224),
    "resnet_v2_tiny": (resnet_v2_tiny, _resnet_arg_scope, preprocess_resnet, RESNET_SCOPE, 64),
    "vgg_16": (vgg_16, _vgg_arg_scope, preprocess_vgg, VGG_SCOPE, 224),
    "vgg_16_pooled": (vgg_16_pooled, _vgg_arg_scope, preprocess_vgg, VGG_SCOPE, 224),
}

# Official slim ImageNet checkpoints name each depth's scope after itself; ours is shared.
official_scopes = {"resnet_v2_50": "resnet_v2_50", "resnet_v2_101": "resnet_v2_101",
                   "vgg_16": "vgg_16"}


def get_network_fn(name, weight_decay=0.0, batch_norm_decay=0.997):
    """Returns the network function for `name`, wrapped in its arg scope.

    Args:
      name: a key of `networks_map`.
      weight_decay: L2 coefficient for the convolution weights (added to REGULARIZATION_LOSSES).
      batch_norm_decay: moving-average decay of batch-norm statistics; 0.997 needs a few
        thousand steps before inference-mode scores settle, short runs want ~0.9.

    Returns:
      ``fn(images, is_training, reuse=None) -> (score [B], end_points)`` with the attributes
      ``default_image_size``, ``scope``, ``head_scope``, ``preprocess`` and ``name``.

    Raises:
      InputError: `name` is not a known network.
    """
    if name not in networks_map:
        raise InputError(f"unknown network {name!r}; choose from {sorted(networks_map)}")
    func, arg_scope_fn, preprocess, scope, size = networks_map[name]

    @functools.wraps(func)
    def network_fn(images, is_training, reuse=None):
        with slim.arg_scope(arg_scope_fn(weight_decay, batch_norm_decay)):
            return func(images, is_training, reuse=reuse)

    network_fn.default_image_size = size
    network_fn.scope = scope
    network_fn.head_scope = f"{scope}/logits"
    network_fn.preprocess = preprocess
    network_fn.name = name
    return network_fn
