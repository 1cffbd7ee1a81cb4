"""ViT-S/14 as DINOv2 trained it (Oquab et al. 2023: pre-norm blocks with layer scale, exact
GELU, a learnt 1 + 37×37 position table for 518² inputs), in tf.compat.v1 graph mode, ending in
a pooled one-score head.

The position table is interpolated in the graph to the input's patch grid (any side that is a
multiple of 14) with PyTorch's bicubic (a = -0.75, half-pixel centres, edges clamped), as the
Hugging Face model the weights come from does: the ImageNet features then match it (the test
compares the final tokens with ONNX Runtime's on the same input).

Variables (scope ``vit_s14``): ``patch_embedding/{weights,biases}``, ``cls_token``,
``position_table``, ``block_K/{norm1,attention/{query,key,value,output},layer_scale1,norm2,
mlp/{fc1,fc2},layer_scale2}`` (K = 0..11), ``norm``; the quality head is ``logits``.
"""

from rankiqa.compat import slim, tf
import rankiqa.nets.heads as heads

PATCH, WIDTH, DEPTH, HEADS, MLP_WIDTH = 14, 384, 12, 6, 1536
TABLE_GRID = 37  # the position table's side: 518² / 14
LAYER_NORM_EPSILON = 1e-6
CUBIC_A = -0.75  # PyTorch's bicubic
# token statistics after these blocks (1-based) join the final CLS and mean token in the
# pooled head (frozen features + ridge on BIQ2021: CV SROCC 0.780; CLS + mean alone 0.693)
POOLED_BLOCKS = ("block_4", "block_8")


def _variable(name, shape, initializer):
    return slim.model_variable(name, shape=shape, initializer=initializer)


@slim.add_arg_scope
def _weights(name, shape, regularizer=None):
    """A weight matrix or kernel: `arg_scope` gives it the weight decay (biases, norms, tables
    and layer scales get none, as in slim's conv layers)."""
    return slim.model_variable(name, shape=shape, regularizer=regularizer,
                               initializer=tf.truncated_normal_initializer(stddev=0.02))


def _dense(x, units, scope):
    with tf.variable_scope(scope):
        kernel = _weights("weights", [x.shape[-1], units])
        bias = _variable("biases", [units], tf.zeros_initializer())
    return tf.tensordot(x, kernel, [[x.shape.ndims - 1], [0]]) + bias


def _layer_norm(x, scope):
    with tf.variable_scope(scope):
        gamma = _variable("gamma", [WIDTH], tf.ones_initializer())
        beta = _variable("beta", [WIDTH], tf.zeros_initializer())
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + LAYER_NORM_EPSILON) * gamma + beta


def _layer_scale(x, scope):
    return x * _variable(scope, [WIDTH], tf.constant_initializer(1e-5))


def _attention(x):
    batch, tokens = tf.shape(x)[0], tf.shape(x)[1]

    def heads_first(t):  # [B, N, C] -> [B, heads, N, C / heads]
        return tf.transpose(tf.reshape(t, [batch, tokens, HEADS, WIDTH // HEADS]), [0, 2, 1, 3])

    with tf.variable_scope("attention"):
        q, k, v = (heads_first(_dense(x, WIDTH, name))
                   for name in ("query", "key", "value"))
        weights = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) * (WIDTH // HEADS) ** -0.5)
        out = tf.reshape(tf.transpose(tf.matmul(weights, v), [0, 2, 1, 3]),
                         [batch, tokens, WIDTH])
        return _dense(out, WIDTH, "output")


def _block(x):
    x = x + _layer_scale(_attention(_layer_norm(x, "norm1")), "layer_scale1")
    normed = _layer_norm(x, "norm2")
    with tf.variable_scope("mlp"):
        hidden = _dense(normed, MLP_WIDTH, "fc1")
        hidden = 0.5 * hidden * (1.0 + tf.math.erf(hidden / 2 ** 0.5))  # exact GELU
        mlp = _dense(hidden, WIDTH, "fc2")
    return x + _layer_scale(mlp, "layer_scale2")


def cubic_resize_matrix(out_size, in_size):
    """``[out_size, in_size]`` weights of PyTorch's bicubic resize along one axis
    (align_corners=False); `out_size` may be a tensor."""
    scale = in_size / tf.cast(out_size, tf.float32)
    x = (tf.cast(tf.range(out_size), tf.float32) + 0.5) * scale - 0.5
    x0 = tf.floor(x)
    t = x - x0
    a = CUBIC_A
    matrix = 0.0
    for k in (-1, 0, 1, 2):
        d = tf.abs(t - k)
        near = ((a + 2) * d - (a + 3)) * d * d + 1  # |d| <= 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # 1 < |d| < 2
        weight = tf.where(d <= 1.0, near, far)
        index = tf.clip_by_value(tf.cast(x0, tf.int32) + k, 0, in_size - 1)
        matrix += tf.one_hot(index, in_size) * weight[:, None]
    return matrix


def position_embedding(table, grid_h, grid_w):
    """``[1, 1 + grid_h * grid_w, C]``: the CLS position and the patch table resized."""
    cls_position, patches = table[:, :1], table[0, 1:]
    patches = tf.reshape(patches, [TABLE_GRID, TABLE_GRID, WIDTH])
    resized = tf.einsum("ij,jkc,lk->ilc", cubic_resize_matrix(grid_h, TABLE_GRID), patches,
                        cubic_resize_matrix(grid_w, TABLE_GRID))
    return tf.concat([cls_position, tf.reshape(resized, [1, -1, WIDTH])], axis=1)


def backbone(images):
    """The ViT under scope ``vit_s14``; `images` ``[B, H, W, 3]``, H and W multiples of 14
    (other sides lose their last partial patch, as a stride-14 convolution does).
    ``end_points``: ``block_1`` ... ``block_12`` (tokens after each block) and ``tokens``
    (after the final norm); token 0 is the CLS token."""
    end_points = {}
    with tf.variable_scope("vit_s14"):
        kernel = _weights("patch_embedding/weights", [PATCH, PATCH, 3, WIDTH])
        bias = _variable("patch_embedding/biases", [WIDTH], tf.zeros_initializer())
        patches = tf.nn.conv2d(images, kernel, PATCH, "VALID") + bias
        batch, grid_h, grid_w = tf.shape(patches)[0], tf.shape(patches)[1], tf.shape(patches)[2]
        cls = _variable("cls_token", [1, 1, WIDTH], tf.truncated_normal_initializer(stddev=0.02))
        table = _variable("position_table", [1, 1 + TABLE_GRID ** 2, WIDTH],
                          tf.truncated_normal_initializer(stddev=0.02))
        x = tf.concat([tf.tile(cls, [batch, 1, 1]), tf.reshape(patches, [batch, -1, WIDTH])], 1)
        x = x + position_embedding(table, grid_h, grid_w)
        for k in range(DEPTH):
            with tf.variable_scope(f"block_{k}"):
                x = _block(x)
            end_points[f"block_{k + 1}"] = x
        end_points["tokens"] = _layer_norm(x, "norm")
    return end_points


def pooled_features(end_points, pooled_blocks):
    """``[B, 1, 1, d]``: mean and std of the patch tokens after each of `pooled_blocks`, then
    the final CLS token and the final mean patch token."""
    blocks = heads.pick_blocks(end_points, pooled_blocks, "vit_s14")
    pooled = heads.mean_std([b[:, 1:] for b in blocks])
    tokens = end_points["tokens"]
    final = tf.concat([tokens[:, 0], tf.reduce_mean(tokens[:, 1:], axis=1)], -1)
    return tf.concat([pooled, final[:, None, None, :]], axis=-1)


def vit_s14(images, is_training, reuse=None, pooled_blocks=POOLED_BLOCKS):
    """The backbone (`backbone`) and the pooled quality head; ``end_points`` adds ``features``
    (`pooled_features`) and ``score``."""
    with tf.variable_scope(tf.get_variable_scope(), reuse=reuse):
        end_points = backbone(images)
        features = pooled_features(end_points, pooled_blocks)
        end_points["features"] = features
        with tf.variable_scope("vit_s14"):
            # the backbone has no batch norm or dropout: is_training reaches only the head
            score = heads.quality_head(features, is_training, normalize=True)
        end_points["score"] = score
    return score, end_points


def arg_scope(weight_decay, batch_norm_decay):
    """L2 weight decay on the weight matrices and the patch kernel."""
    del batch_norm_decay  # the head's feature norm sets its own
    regularizer = slim.l2_regularizer(weight_decay) if weight_decay else None
    with slim.arg_scope([_weights], regularizer=regularizer) as sc:
        return sc
