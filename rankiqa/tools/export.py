"""Exports: weights as arrays (.npz / .npy dict), a frozen GraphDef (.pb), a SavedModel.

Every graph export takes float32 RGB images in the uint8 range, ``rankiqa/images:0``
``[None, H, W, 3]``, applies the network's preprocessing inside the graph, and returns one
quality score per view, ``rankiqa/score:0`` ``[None]``, on the model's scale as `rankiqa predict`
gives it (a fine-tuned model's labels' range and direction; ``normalised=True``: [0, 1], higher
better). Beside it goes ``preprocess.json`` (`preprocess_spec`): the views, resize filters,
input and output and what the scores mean (``score_scale``, ``score_range``,
``higher_is_better``), which `rankiqa.preprocessing.preprocess` (NumPy and Pillow only) reads to feed the
model as `rankiqa predict` does.
"""

import json
import os

import numpy as np

from rankiqa.run import rundir
from rankiqa.serve import engines, quantize, scales, scoring
from rankiqa.weights import restore
from rankiqa.preprocessing import preprocess
from rankiqa.preprocessing import views as views_lib
from rankiqa.compat import tf
from rankiqa.errors import InputError


def export_arrays(checkpoint, out, fmt="npz", include=(), exclude=(), model_only=True,
                  force=False):
    """Writes the weights: ``npz`` (safe, no pickle) or ``npy`` (a pickled dict, as the RankIQA
    write-up's tools save it; loading needs ``allow_pickle=True``), and beside them
    ``OUT.preprocess.json`` (`arrays_spec`). Returns the arrays written."""
    _check_outputs(out, checkpoint, force, "--output", preprocess_path(out))
    if fmt not in ("npz", "npy"):
        raise InputError(f"unknown format {fmt!r}; choose from ['npy', 'npz']")
    _, arrays = restore.model_arrays(checkpoint, include, exclude, model_only)
    with rundir.writing(out) as tmp:
        if fmt == "npz":
            np.savez(tmp, **arrays)
        else:
            np.save(tmp, arrays, allow_pickle=True)
    write_spec(out, arrays_spec(checkpoint, out))
    return arrays


def arrays_spec(model, out):
    """What weights alone need to score as `rankiqa predict` does: the network, the views and
    resize filters of a graph export's spec (`preprocess_spec`), and what the network's output
    means. Weights carry no scoring graph: its output is the normalised score the model
    trained on; ``labels_scale`` maps it to the labels' own (`rankiqa.serve.scales`)."""
    _, info = restore.open_model(model)
    views = scoring.model_views(info, info["net"]) if info.get("net") else None
    labels = scales.of_model(info)
    return {
        "format": 1, "model": info.get("ref") or model, "network": info.get("net"),
        "views": {**views.as_dict(), "seed": views_lib.VIEW_SEED} if views else None,
        "resize": RESIZE,
        "input": None, "output": None,
        "load": f"rankiqa predict PHOTOS --model {out} --net {info.get('net') or 'NET'}, or "
                "rankiqa.weights.restore.load_into(session, path) in a graph of that network",
        **scales.of_model(info, normalised=True).as_dict(),
        "labels_scale": labels.as_dict() if not labels.is_normalised else None,
    }


PREPROCESS_NAME = "preprocess.json"
# how views are resized (`rankiqa.preprocessing.preprocess`): Pillow's default for the pyramid, bicubic, misses
# `predict` by up to 0.028
RESIZE = {"upscale": "bicubic, the shorter side to the crop when smaller",
          "pyramid": "bilinear (Pillow, reducing_gap None)"}


def preprocess_path(out):
    """Where a graph export's ``preprocess.json`` goes: inside a SavedModel folder, else beside
    the file, named after it (``mine.onnx`` -> ``mine.onnx.preprocess.json``: an ONNX and a .pb
    export of one name do not share one)."""
    if out.endswith(os.sep) or os.path.isdir(out):
        return os.path.join(out, PREPROCESS_NAME)
    return f"{out}.{PREPROCESS_NAME}"


def preprocess_spec(scorer, model):
    """What a served export needs to score as `rankiqa predict` does (`rankiqa.preprocessing.preprocess`)."""
    views = scorer.views
    return {
        "format": 1, "model": scorer.model.description.get("ref") or model,
        "views": {**views.as_dict(), "seed": views_lib.VIEW_SEED},
        "resize": RESIZE,
        "input": {"name": scorer.images.name, "dtype": "float32",
                  "shape": [None, views.crop, views.crop, 3], "range": "RGB 0-255"},
        "output": {"name": scorer.score.name, "shape": [None],
                   "per_image": f"the mean of each image's {views.count} consecutive scores"},
        **scorer.model.scale.as_dict(),
    }


def write_spec(out, spec):
    """Writes `out`'s ``preprocess.json`` with the model file's SHA-256 (``model_sha256``):
    model and spec are two files, renamed into place one after the other, so an export cut
    between the two renames leaves a pair that does not belong together;
    `rankiqa.preprocessing.preprocess.load_spec` and the next export see it by the digest
    (`preprocess.file_sha256`, one digest for both sides)."""
    rundir.write_json_atomic(preprocess_path(out),
                             {**spec, "model_sha256": preprocess.file_sha256(out)})


def _check_outputs(out, checkpoint, force, option, spec_out):
    if not force and os.path.isfile(out):
        try:
            with open(spec_out) as f:
                recorded = json.load(f).get("model_sha256")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded != preprocess.file_sha256(out):
            state = "is missing or damaged" if recorded is None else "describes another model"
            raise InputError(f"{option} {out} exists, and {spec_out} {state} (an export cut "
                             "short?); pass --force to write both again")
    rundir.check_output(out, [checkpoint], force, option)
    if spec_out:
        rundir.check_output(spec_out, [checkpoint], force, f"{option}'s {PREPROCESS_NAME}")


def export_pb(checkpoint, out, net=None, force=False, normalised=False):
    """Freezes the scoring graph into a GraphDef (and writes its ``preprocess.json``); returns
    that spec (`preprocess_spec`)."""
    _check_outputs(out, checkpoint, force, "--output", preprocess_path(out))
    with scoring.load_scorer(checkpoint, net=net, normalised=normalised) as scorer:
        frozen = engines.frozen_graph_def(scorer)
        spec = preprocess_spec(scorer, checkpoint)
    rundir.write_atomic(out, frozen.SerializeToString())
    write_spec(out, spec)
    return spec


def export_savedmodel(checkpoint, out_dir, net=None, force=False, normalised=False):
    """A SavedModel with signature ``serving_default``: images -> score, and its
    ``preprocess.json`` inside; returns that spec."""
    rundir.check_output(out_dir, [checkpoint], force, "--output-dir")
    # the old export goes only once the new one is complete: a failed --force loses nothing
    with rundir.writing(out_dir) as tmp, scoring.load_scorer(
            checkpoint, net=net, normalised=normalised) as scorer:
        spec = preprocess_spec(scorer, checkpoint)
        with scorer.graph.as_default():
            builder = tf.saved_model.builder.SavedModelBuilder(tmp)
            signature = tf.saved_model.signature_def_utils.predict_signature_def(
                inputs={"images": scorer.images}, outputs={"score": scorer.score})
            builder.add_meta_graph_and_variables(
                scorer.session, [tf.saved_model.tag_constants.SERVING],
                signature_def_map={"serving_default": signature}, strip_default_attrs=True)
            builder.save()
        rundir.write_json_atomic(os.path.join(tmp, PREPROCESS_NAME), spec)
    return spec


def export_onnx(checkpoint, out, net=None, opset=13, force=False, normalised=False,
                int8=None):
    """Converts the frozen scoring graph to ONNX with tf2onnx (`rankiqa.serve.engines.onnx_model`;
    ``pip install 'rankiqa[onnx]'``). Input ``rankiqa/images:0`` and output ``rankiqa/score:0``
    keep their names. With `int8` (``{"photos": paths or None, "count": n}``), the conversion
    is quantised (`rankiqa.serve.quantize.int8_export`) and the spec's ``int8`` says how and
    what it changes. Returns the spec written beside it (`preprocess_spec`)."""
    _check_outputs(out, checkpoint, force, "--output", preprocess_path(out))
    engines.require_onnx("tf2onnx")
    with scoring.load_scorer(checkpoint, net=net, normalised=normalised) as scorer:
        model = engines.onnx_model(scorer, opset).SerializeToString()
        spec = preprocess_spec(scorer, checkpoint)
        views = scorer.views
    if int8 is not None:
        model, spec["int8"] = quantize.int8_export(model, views, spec["input"]["name"],
                                                   spec["output"]["name"], **int8)
    rundir.write_atomic(out, model)
    write_spec(out, spec)
    return spec
