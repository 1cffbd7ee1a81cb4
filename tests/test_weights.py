"""One loader for every source of starting weights, one report."""

import os

import numpy as np
import pytest

from rankiqa.serve import scoring
from rankiqa.weights import restore
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
        init_fn, report = restore.build_init(source, variables, exclude_scopes=["resnet_v2/logits"])
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
    assert restore.build_init("scratch") == (None, None)
    with pytest.raises(ValueError, match="not 'scratch', a checkpoint, training folder or .npz "
                                         r"file, a built-in model \(\['biq2021-.*\]\) or a "
                                         r"pretrained start \(choose from \['dinov2-vits14', "
                                         r"'efficientnet-lite0', 'efficientnet-lite2', "
                                         r"'efficientnet-lite2\+dinov2-vits14', 'hed-vgg16'\]\)"):
        restore.build_init(str(tmp_path / "nothing"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="is a folder with no checkpoint in it"):
        restore.build_init(str(tmp_path / "empty"))


def test_missing_and_misfit_variables_are_named_or_allowed(stage_one, tmp_path):
    values = model_values(stage_one)
    del values["resnet_v2/conv1/weights"]
    values["resnet_v2/extra/weights"] = np.zeros(5, np.float32)  # no such variable: unused
    np.savez(tmp_path / "w.npz", **values)
    with tf.Graph().as_default():
        variables = tiny_graph()
        with pytest.raises(restore.CheckpointError,
                           match=r"does not fit the model: 1 variables missing, 0 of another "
                                 r"shape \(e.g. \['resnet_v2/conv1/weights'\]\); set "
                                 "init.ignore_missing"):
            restore.build_init(str(tmp_path / "w.npz"), variables)
        _, report = restore.build_init(str(tmp_path / "w.npz"), variables, allow_missing=True)
    assert report.missing == ["resnet_v2/conv1/weights"]
    assert report.unused == ["resnet_v2/extra/weights"]
    assert "  not in source (left at initialiser): resnet_v2/conv1/weights" in report.lines()


def test_pickles_are_read_only_when_allowed(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    np.save(tmp_path / "evil.npy", np.array({"x": Payload()}, dtype=object), allow_pickle=True)
    with pytest.raises(restore.CheckpointError, match="holds a pickle, which can run code"):
        restore.load_arrays(str(tmp_path / "evil.npy"))
    assert not marker.exists()
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(restore.CheckpointError, match="a single array, not a saved dict"):
        restore.load_arrays(str(tmp_path / "plain.npy"))
    (tmp_path / "junk.npz").write_bytes(b"not numpy")
    with pytest.raises(restore.CheckpointError, match="junk.npz: not a NumPy file"):
        restore.load_arrays(str(tmp_path / "junk.npz"))


def damaged_npz_files(folder):
    """{what: path} of .npz files damaged in each way a download or a disk can damage one."""
    import zipfile

    good = folder / "good.npz"
    np.savez(good, a=np.arange(1000, dtype=np.float32), b=np.ones((4, 4), np.float32))
    data = good.read_bytes()
    files = {"truncated": data[: len(data) // 2]}
    flipped = bytearray(data)
    at = data.index(np.arange(1000, dtype=np.float32)[500:504].tobytes())
    flipped[at:at + 4] = b"\xff\xff\xff\xff"
    files["bad CRC"] = bytes(flipped)
    for what in files:
        (folder / f"{what}.npz").write_bytes(files[what])
    np.savez(folder / "object.npz", a=np.array([{"x": 1}], dtype=object))
    with zipfile.ZipFile(folder / "text.npz", "w") as z:
        z.writestr("notes.txt", "not an array")
    huge = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    huge["shape"] = (100000, 100000)  # 37 GiB claimed in a few bytes
    with zipfile.ZipFile(folder / "huge.npz", "w") as z, z.open("a.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, huge)
        f.write(b"\0" * 16)
    return {what: folder / f"{what}.npz" for what in
            ("truncated", "bad CRC", "object", "text", "huge")}


@pytest.mark.parametrize("what,message", [
    ("truncated", "a damaged or incomplete NumPy file"), ("bad CRC", "a damaged or incomplete"),
    ("object", "holds a pickle, which can run code"), ("text", "member 'notes.txt' is not a "
                                                                "NumPy array"),
    ("huge", r"member 'a' claims \[100000, 100000\] float32 \(40,000,000,000 bytes\) in 144:")])
def test_a_damaged_npz_is_one_error_naming_it(tmp_path, what, message):
    path = damaged_npz_files(tmp_path)[what]
    with pytest.raises(restore.CheckpointError, match=message) as caught:
        restore.load_arrays(str(path))
    assert str(path) in str(caught.value)


def test_non_model_variables_are_one_list():
    for name in ("global_step", "resnet_v2/conv1/weights/Adam", "beta1_power",
                 "resnet_v2/logits/weights/Momentum"):
        assert not restore.is_model_variable(name)
    assert restore.is_model_variable("resnet_v2/block1/unit_1/bottleneck_v2/conv1/weights")
