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

import functools

from rankiqa.compat import slim
from rankiqa.errors import InputError
from rankiqa.nets import combined, efficientnet, preprocessing, resnet, vgg, vit
from rankiqa.nets.preprocessing import caffe_vgg as preprocess_vgg  # noqa: F401 (public)
from rankiqa.nets.resnet import RESNET_SCOPE, _resnet_v2_tiny_blocks  # noqa: F401 (tests)
from rankiqa.nets.vgg import VGG_SCOPE

# name -> (network function, arg scope factory, preprocessing, scope, default image size)
networks_map = {
    "resnet_v2_50": (resnet.resnet_v2_50, resnet.arg_scope, preprocessing.inception,
                     RESNET_SCOPE, 224),
    "resnet_v2_101": (resnet.resnet_v2_101, resnet.arg_scope, preprocessing.inception,
                      RESNET_SCOPE, 224),
    "resnet_v2_tiny": (resnet.resnet_v2_tiny, resnet.arg_scope, preprocessing.inception,
                       RESNET_SCOPE, 64),
    "vgg_16": (vgg.vgg_16, vgg.arg_scope, preprocessing.caffe_vgg, VGG_SCOPE, 224),
    "vgg_16_pooled": (vgg.vgg_16_pooled, vgg.arg_scope, preprocessing.caffe_vgg, VGG_SCOPE, 224),
    # 224², not the 260² lite2 was trained at: the recipes' native-scale crops (measured there)
    "efficientnet_lite0": (efficientnet.efficientnet_lite0, efficientnet.arg_scope,
                           preprocessing.imagenet_mean_std, "efficientnet_lite0", 224),
    "efficientnet_lite2": (efficientnet.efficientnet_lite2, efficientnet.arg_scope,
                           preprocessing.imagenet_mean_std, "efficientnet_lite2", 224),
    "vit_s14": (vit.vit_s14, vit.arg_scope, preprocessing.imagenet_mean_std, "vit_s14", 224),
    "efficientnet_vit": (combined.efficientnet_vit, combined.arg_scope,
                         preprocessing.imagenet_mean_std, combined.SCOPE, 224),
}

# Official slim ImageNet checkpoints name each depth's scope after itself; ours is shared.
official_scopes = {"resnet_v2_50": "resnet_v2_50", "resnet_v2_101": "resnet_v2_101",
                   "vgg_16": "vgg_16"}


# networks whose head pools several blocks' statistics -> their default blocks
pooled_blocks_map = {"vgg_16_pooled": vgg.POOLED_BLOCKS,
                     "efficientnet_lite0": efficientnet.POOLED_BLOCKS,
                     "efficientnet_lite2": efficientnet.POOLED_BLOCKS,
                     "vit_s14": vit.POOLED_BLOCKS,
                     "efficientnet_vit": combined.POOLED_BLOCKS}


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
    func, arg_scope_fn, preprocess, scope, size = networks_map[name]
    if pooled_blocks and name not in pooled_blocks_map:
        raise InputError(f"net.pooled_blocks: {name} has no pooled head; networks with one: "
                         f"{sorted(pooled_blocks_map)}")
    pooled = tuple(pooled_blocks) or pooled_blocks_map.get(name, ())
    kwargs = {"pooled_blocks": pooled} if pooled else {}

    @functools.wraps(func)
    def network_fn(images, is_training, reuse=None):
        with slim.arg_scope(arg_scope_fn(weight_decay, batch_norm_decay)):
            return func(images, is_training, reuse=reuse, **kwargs)

    network_fn.default_image_size = size
    network_fn.scope = scope
    network_fn.head_scope = f"{scope}/logits"
    network_fn.preprocess = preprocess
    network_fn.name = name
    network_fn.pooled_blocks = pooled
    return network_fn
