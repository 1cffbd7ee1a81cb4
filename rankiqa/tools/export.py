"""Exports: weights as arrays (.npz / .npy dict), a frozen GraphDef (.pb), a SavedModel.

Every graph export takes float32 RGB images in the uint8 range, ``rankiqa/images:0``
``[None, H, W, 3]``, applies the network's preprocessing inside the graph, and returns one
quality score per image, ``rankiqa/score:0`` ``[None]`` (higher is better).
"""

import numpy as np

from rankiqa import rundir, scoring, weights
from rankiqa.compat import tf
from rankiqa.errors import InputError


def export_arrays(checkpoint, out, fmt="npz", include=(), exclude=(), model_only=True,
                  force=False):
    """Writes the weights: ``npz`` (safe, no pickle) or ``npy`` (a pickled dict, as the RankIQA
    write-up's tools save it; loading needs ``allow_pickle=True``). Returns the arrays
    written."""
    rundir.check_output(out, [checkpoint], force, "OUT")
    if fmt not in ("npz", "npy"):
        raise InputError(f"unknown format {fmt!r}; choose from ['npy', 'npz']")
    _, arrays = weights.model_arrays(checkpoint, include, exclude, model_only)
    with rundir.writing(out) as tmp:
        if fmt == "npz":
            np.savez(tmp, **arrays)
        else:
            np.save(tmp, arrays, allow_pickle=True)
    return arrays


def frozen_graph_def(checkpoint, net=None):
    """(GraphDef with variables folded into constants, input name, output name)."""
    with scoring.load_scorer(checkpoint, net=net) as scorer:
        return scoring.frozen_graph_def(scorer), scorer.images.name, scorer.score.name


def export_pb(checkpoint, out, net=None, force=False):
    """Freezes the scoring graph into a GraphDef; returns (input name, output name)."""
    rundir.check_output(out, [checkpoint], force, "OUT")
    frozen, input_name, output_name = frozen_graph_def(checkpoint, net)
    rundir.write_atomic(out, frozen.SerializeToString())
    return input_name, output_name


def export_savedmodel(checkpoint, out_dir, net=None, force=False):
    """A SavedModel with signature ``serving_default``: images -> score."""
    rundir.check_output(out_dir, [checkpoint], force, "OUT_DIR")
    # the old export goes only once the new one is complete: a failed --force loses nothing
    with rundir.writing(out_dir) as tmp, scoring.load_scorer(checkpoint, net=net) as scorer:
        with scorer.graph.as_default():
            builder = tf.saved_model.builder.SavedModelBuilder(tmp)
            signature = tf.saved_model.signature_def_utils.predict_signature_def(
                inputs={"images": scorer.images}, outputs={"score": scorer.score})
            builder.add_meta_graph_and_variables(
                scorer.session, [tf.saved_model.tag_constants.SERVING],
                signature_def_map={"serving_default": signature}, strip_default_attrs=True)
            builder.save()
            names = scorer.images.name, scorer.score.name
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
    rundir.write_atomic(out, model_proto.SerializeToString())
    return names
