"""The backbones: a name -> network map, each network ending in a one-score head.

Every network keeps slim's contract, ``fn(images, is_training, reuse=None) -> (score, end_points)``
with ``score: [batch]`` (float32) and ``images: [batch, H, W, 3]`` already preprocessed by
``fn.preprocess`` (the network's own input convention, kept with the network so that training,
export and ``predict`` always agree). Each function also carries:

- ``default_image_size``: the crop the network was designed for;
- ``scope``: the variable scope it is built under (``resnet_v2`` for every ResNet, so that
  checkpoints of different depths share names and stage two excludes one head scope);
- ``head_scope``: the one-output quality head (``resnet_v2/logits``), which stage two re-learns.

``end_points["features"]`` is the head's input ``[batch, 1, 1, d]`` (the pooled features the
probe fits the head on). One module per family: `resnet`, `vgg`, `efficientnet`, `vit` (`combined`: two under one
head);
`heads` holds the pooled statistics and the quality head they share, `preprocessing` the input
conventions.
"""

import dataclasses
import functools
from typing import Callable, Optional, Tuple

from rankiqa.compat import slim
from rankiqa.errors import InputError
from rankiqa.nets import combined, efficientnet, resnet, vgg, vit
from rankiqa.nets.resnet import RESNET_SCOPE
from rankiqa.nets.vgg import VGG_SCOPE
from rankiqa.preprocessing import normalise

@dataclasses.dataclass(frozen=True)
class Network:
    """One row of `networks_map`: everything the factory needs to build a network."""

    fn: Callable  # slim's contract: fn(images, is_training, reuse=None, ...) -> (score, end_points)
    arg_scope: Callable  # arg_scope(weight_decay, batch_norm_decay)
    preprocess: Callable  # uint8-range RGB -> the network's input convention
    scope: str  # the variable scope it is built under
    default_image_size: int
    # an official slim ImageNet checkpoint's scope, where it differs (ours is shared by depths)
    official_scope: Optional[str] = None
    # the blocks whose statistics a pooled head reads by default; () for a plain head
    pooled_blocks: Tuple[str, ...] = ()


networks_map = {
    "resnet_v2_50": Network(resnet.resnet_v2_50, resnet.arg_scope, normalise.inception,
                            RESNET_SCOPE, 224, official_scope="resnet_v2_50"),
    "resnet_v2_101": Network(resnet.resnet_v2_101, resnet.arg_scope, normalise.inception,
                             RESNET_SCOPE, 224, official_scope="resnet_v2_101"),
    "resnet_v2_tiny": Network(resnet.resnet_v2_tiny, resnet.arg_scope, normalise.inception,
                              RESNET_SCOPE, 64),
    "vgg_16": Network(vgg.vgg_16, vgg.arg_scope, normalise.caffe_vgg, VGG_SCOPE, 224,
                      official_scope="vgg_16"),
    "vgg_16_pooled": Network(vgg.vgg_16_pooled, vgg.arg_scope, normalise.caffe_vgg,
                             VGG_SCOPE, 224, pooled_blocks=vgg.POOLED_BLOCKS),
    # 224², not the 260² lite2 was trained at: the recipes' native-scale crops (measured there)
    "efficientnet_lite0": Network(efficientnet.efficientnet_lite0, efficientnet.arg_scope,
                                  normalise.imagenet_mean_std, "efficientnet_lite0", 224,
                                  pooled_blocks=efficientnet.POOLED_BLOCKS),
    "efficientnet_lite2": Network(efficientnet.efficientnet_lite2, efficientnet.arg_scope,
                                  normalise.imagenet_mean_std, "efficientnet_lite2", 224,
                                  pooled_blocks=efficientnet.POOLED_BLOCKS),
    "vit_s14": Network(vit.vit_s14, vit.arg_scope, normalise.imagenet_mean_std, "vit_s14",
                       224, pooled_blocks=vit.POOLED_BLOCKS),
    "efficientnet_vit": Network(combined.efficientnet_vit, combined.arg_scope,
                                normalise.imagenet_mean_std, combined.SCOPE, 224,
                                pooled_blocks=combined.POOLED_BLOCKS),
}


def get_network_fn(name, weight_decay=0.0, batch_norm_decay=0.997, pooled_blocks=()):
    """Returns the network function for `name`, wrapped in its arg scope.

    Args:
      name: a key of `networks_map`.
      weight_decay: L2 coefficient for the convolution weights (added to REGULARIZATION_LOSSES).
      batch_norm_decay: moving-average decay of batch-norm statistics; 0.997 needs a few
        thousand steps before inference-mode scores settle, short runs want ~0.9.
      pooled_blocks: the blocks a pooled head reads (`pooled_blocks_map`); empty: its default.

    Returns:
      ``fn(images, is_training, reuse=None) -> (score [B], end_points)`` with the attributes
      ``default_image_size``, ``scope``, ``head_scope``, ``preprocess``, ``name`` and
      ``pooled_blocks``.

    Raises:
      InputError: `name` is not a known network, or `pooled_blocks` given for a network
        without a pooled head.
    """
    if name not in networks_map:
        raise InputError(f"unknown network {name!r}; choose from {sorted(networks_map)}")
    row = networks_map[name]
    if pooled_blocks and not row.pooled_blocks:
        raise InputError(f"net.pooled_blocks: {name} has no pooled head; networks with one: "
                         f"{sorted(n for n, r in networks_map.items() if r.pooled_blocks)}")
    pooled = tuple(pooled_blocks) or row.pooled_blocks
    kwargs = {"pooled_blocks": pooled} if pooled else {}

    @functools.wraps(row.fn)
    def network_fn(images, is_training, reuse=None):
        with slim.arg_scope(row.arg_scope(weight_decay, batch_norm_decay)):
            return row.fn(images, is_training, reuse=reuse, **kwargs)

    network_fn.default_image_size = row.default_image_size
    network_fn.scope = row.scope
    network_fn.head_scope = f"{row.scope}/logits"
    network_fn.official_scope = row.official_scope
    network_fn.preprocess = row.preprocess
    network_fn.name = name
    network_fn.pooled_blocks = pooled
    return network_fn
