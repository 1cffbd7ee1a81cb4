"""VGG-16's convolutions (slim's names) with pooled one-score heads in place of fc6-fc8."""

from rankiqa.compat import slim, tf
import rankiqa.nets.heads as heads
from tf_slim.nets import vgg

VGG_SCOPE = "vgg_16"


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
    """`pool_fn(net, {block name: output}) -> [B, 1, 1, d]` gives the head's features."""
    with tf.variable_scope(VGG_SCOPE, "vgg_16", [images], reuse=reuse) as sc:
        end_points_collection = sc.original_name_scope + "_end_points"
        with slim.arg_scope([slim.conv2d, slim.max_pool2d],
                            outputs_collections=end_points_collection):
            net, blocks = _vgg_16_convs(images)
        end_points = slim.utils.convert_collection_to_dict(end_points_collection)
        features = pool_fn(net, {f"conv{i + 1}": b for i, b in enumerate(blocks)})
        end_points["features"] = features
        score = heads.quality_head(features, is_training, normalize)
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


POOLED_BLOCKS = ("conv1", "conv2", "conv3", "conv4", "conv5")


# Pooled ReLU statistics are heavy-tailed (channel means span orders of magnitude); a linear
# head on their logarithm ranks better. Ridge on frozen hed-vgg16 features of BIQ2021 centre
# crops, validation SROCC: 0.657 raw, 0.694 log(x + 0.1), 0.690 with 1e-3, 0.687 with 1.
LOG_OFFSET = 0.1


def vgg_16_pooled(images, is_training, reuse=None, pooled_blocks=POOLED_BLOCKS):
    """VGG-16's convolutions with a quality head over several blocks (default every block):
    the log mean and standard deviation of each block's output, concatenated (2,944 features
    for all five), batch-normalised, then one linear score.
    Any crop size works; the head is ``vgg_16/logits``, the scope stage two re-learns."""
    def pool(net, blocks):
        del net  # the last block is in `blocks`
        return heads.mean_std(heads.pick_blocks(blocks, pooled_blocks, "vgg_16_pooled"),
                              log_offset=LOG_OFFSET)

    return _vgg_16_with_head(images, reuse, pool, is_training, normalize=True)


def arg_scope(weight_decay, batch_norm_decay):
    del batch_norm_decay  # VGG-16 has no batch norm
    return vgg.vgg_arg_scope(weight_decay=weight_decay)
