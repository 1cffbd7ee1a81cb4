"""One loader for every source of starting weights, one report."""

import os

import numpy as np
import pytest

from rankiqa import scoring, weights
from rankiqa.compat import slim, tf
from rankiqa_testkit import model_values


def tiny_graph():
    """A tiny scoring graph in the default graph; returns its model variables."""
    scoring.build_scoring_graph("resnet_v2_tiny")
    return slim.get_model_variables()


@pytest.mark.parametrize("kind", ["folder", "prefix", "npz"])
def test_every_source_loads_the_same_values(stage_one, tmp_path, kind):
    expected = model_values(stage_one)
    source = {"folder": stage_one, "prefix": tf.train.latest_checkpoint(stage_one),
              "npz": str(tmp_path / "w.npz")}[kind]
    if kind == "npz":
        np.savez(source, **expected)
    with tf.Graph().as_default(), tf.Session() as sess:
        variables = tiny_graph()
        init_fn, report = weights.build_init(source, variables, exclude_scopes=["resnet_v2/logits"])
        sess.run(tf.global_variables_initializer())
        init_fn(sess)
        got = {v.op.name: sess.run(v) for v in variables}
    assert report.excluded == ["resnet_v2/logits/weights", "resnet_v2/logits/biases"]
    assert len(report.restored) == len(expected) - 2 and not report.missing
    assert report.unused == ["resnet_v2/logits/biases", "resnet_v2/logits/weights"]
    for name, value in got.items():
        if not name.startswith("resnet_v2/logits"):
            np.testing.assert_array_equal(value, expected[name])
    assert report.as_dict()["source"] == report.source and report.lines()[0].startswith(
        f"restored {len(expected) - 2} variables from ")


def test_scratch_and_unknown_sources(tmp_path):
    assert weights.build_init("scratch") == (None, None)
    with pytest.raises(ValueError, match="not 'scratch', a checkpoint, training folder or .npz "
                                         r"file, a built-in model \(\['biq2021-.*\]\) or a "
                                         r"pretrained start \(choose from \['dinov2-vits14', "
                                         r"'efficientnet-lite0', 'efficientnet-lite2', "
                                         r"'efficientnet-lite2\+dinov2-vits14', 'hed-vgg16'\]\)"):
        weights.build_init(str(tmp_path / "nothing"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="is a folder with no checkpoint in it"):
        weights.build_init(str(tmp_path / "empty"))


def test_missing_and_misfit_variables_are_named_or_allowed(stage_one, tmp_path):
    values = model_values(stage_one)
    del values["resnet_v2/conv1/weights"]
    values["resnet_v2/extra/weights"] = np.zeros(5, np.float32)  # no such variable: unused
    np.savez(tmp_path / "w.npz", **values)
    with tf.Graph().as_default():
        variables = tiny_graph()
        with pytest.raises(weights.CheckpointError,
                           match=r"does not fit the model: 1 variables missing, 0 of another "
                                 r"shape \(e.g. \['resnet_v2/conv1/weights'\]\); set "
                                 "init.ignore_missing"):
            weights.build_init(str(tmp_path / "w.npz"), variables)
        _, report = weights.build_init(str(tmp_path / "w.npz"), variables, allow_missing=True)
    assert report.missing == ["resnet_v2/conv1/weights"]
    assert report.unused == ["resnet_v2/extra/weights"]
    assert "  not in source (left at initialiser): resnet_v2/conv1/weights" in report.lines()


def test_pickles_are_read_only_when_allowed(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    np.save(tmp_path / "evil.npy", np.array({"x": Payload()}, dtype=object), allow_pickle=True)
    with pytest.raises(weights.CheckpointError, match="holds a pickle, which can run code"):
        weights.load_arrays(str(tmp_path / "evil.npy"))
    assert not marker.exists()
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(weights.CheckpointError, match="a single array, not a saved dict"):
        weights.load_arrays(str(tmp_path / "plain.npy"))
    (tmp_path / "junk.npz").write_bytes(b"not numpy")
    with pytest.raises(weights.CheckpointError, match="junk.npz: not a NumPy file"):
        weights.load_arrays(str(tmp_path / "junk.npz"))


def test_non_model_variables_are_one_list():
    for name in ("global_step", "resnet_v2/conv1/weights/Adam", "beta1_power",
                 "resnet_v2/logits/weights/Momentum"):
        assert not weights.is_model_variable(name)
    assert weights.is_model_variable("resnet_v2/block1/unit_1/bottleneck_v2/conv1/weights")
