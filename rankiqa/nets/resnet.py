"""ResNet v2 (slim's ``resnet_v2``) under the shared scope ``resnet_v2``, ending in a one-score head."""

from rankiqa.compat import slim, tf
from tf_slim.nets import resnet_utils, resnet_v2

RESNET_SCOPE = "resnet_v2"


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


def _blocks(base_depths, units):
    """slim's four resnet_v2 blocks; the last keeps stride 1 (output stride 32)."""
    return [resnet_v2.resnet_v2_block(f"block{k + 1}", base_depth=depth, num_units=n,
                                      stride=2 if k < 3 else 1)
            for k, (depth, n) in enumerate(zip(base_depths, units))]


def _resnet_v2_50_blocks():
    return _blocks((64, 128, 256, 512), (3, 4, 6, 3))


def _resnet_v2_101_blocks():
    return _blocks((64, 128, 256, 512), (3, 4, 23, 3))


def _resnet_v2_tiny_blocks():
    # The resnet_v2_50 layout at a sixteenth of the width and one unit per block: the same
    # code paths (root block, bottlenecks, shortcuts, batch norm) at ~1,300 img/s on 64² CPU.
    return _blocks((16, 16, 16, 16), (1, 1, 1, 1))


def resnet_v2_50(images, is_training, reuse=None):
    return _resnet(_resnet_v2_50_blocks(), images, is_training, reuse)


def resnet_v2_101(images, is_training, reuse=None):
    return _resnet(_resnet_v2_101_blocks(), images, is_training, reuse)


def resnet_v2_tiny(images, is_training, reuse=None):
    return _resnet(_resnet_v2_tiny_blocks(), images, is_training, reuse)


def arg_scope(weight_decay, batch_norm_decay):
    return resnet_utils.resnet_arg_scope(weight_decay=weight_decay,
                                         batch_norm_decay=batch_norm_decay)
