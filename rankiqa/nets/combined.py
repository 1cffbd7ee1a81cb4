"""Two pretrained backbones under one quality head: EfficientNet-Lite2's and DINOv2 ViT-S/14's
pooled statistics concatenated (frozen features + ridge on BIQ2021: CV SROCC 0.813 over 6,000
images, against 0.779 and 0.780 for each alone). A Siamese network is any function from image to
score: ranking, the probe and LP-FT treat it as one network.

Scope ``efficientnet_vit``: ``efficientnet_vit/efficientnet_lite2/...``,
``efficientnet_vit/vit_s14/...`` (each backbone's own names) and the head
``efficientnet_vit/logits``. Pooled block names carry the backbone's prefix
(``efficientnet/stage_4``, ``vit/block_8``). Both read ImageNet mean/std input.
"""

from rankiqa.compat import slim, tf
from rankiqa.errors import InputError
import rankiqa.nets.efficientnet as efficientnet
import rankiqa.nets.heads as heads
import rankiqa.nets.vit as vit

SCOPE = "efficientnet_vit"
PREFIXES = ("efficientnet/", "vit/")
POOLED_BLOCKS = (tuple("efficientnet/" + b for b in efficientnet.POOLED_BLOCKS)
                 + tuple("vit/" + b for b in vit.POOLED_BLOCKS))


def efficientnet_vit(images, is_training, reuse=None, pooled_blocks=POOLED_BLOCKS):
    """``end_points``: each backbone's under its prefix, ``features`` and ``score``."""
    unprefixed = [b for b in pooled_blocks if not b.startswith(PREFIXES)]
    if unprefixed:
        raise InputError(f"net.pooled_blocks: {SCOPE}'s block names start with 'efficientnet/' "
                         f"or 'vit/', not {unprefixed[0]!r}")
    with tf.variable_scope(SCOPE, reuse=reuse):
        conv = efficientnet.backbone("efficientnet_lite2", images, is_training)
        tokens = vit.backbone(images)
        features = tf.concat([
            efficientnet.pooled_features(
                conv, [b[len("efficientnet/"):] for b in pooled_blocks
                       if b.startswith("efficientnet/")], SCOPE),
            vit.pooled_features(tokens, [b[len("vit/"):] for b in pooled_blocks
                                         if b.startswith("vit/")])], axis=-1)
        score = heads.quality_head(features, is_training, normalize=True)
    end_points = {**{"efficientnet/" + k: t for k, t in conv.items()},
                  **{"vit/" + k: t for k, t in tokens.items()},
                  "features": features, "score": score}
    return score, end_points


def arg_scope(weight_decay, batch_norm_decay):
    with slim.arg_scope(efficientnet.arg_scope(weight_decay, batch_norm_decay)):
        with slim.arg_scope(vit.arg_scope(weight_decay, batch_norm_decay)) as sc:
            return sc
