import numpy as np
import pytest

from rankiqa import nets, siamese
from rankiqa.compat import slim, tf


def test_unknown_network_lists_choices():
    with pytest.raises(ValueError, match=r"unknown network 'resnet_v3'; choose from \["):
        nets.get_network_fn("resnet_v3")


@pytest.mark.parametrize("name", sorted(nets.networks_map))
def test_every_network_gives_one_score_per_image_under_its_scope(name):
    network_fn = nets.get_network_fn(name, weight_decay=1e-4)
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [3, 64, 64, 3])
        score, end_points = network_fn(network_fn.preprocess(images), is_training=False)
        assert score.shape.as_list() == [3]
        names = [v.op.name for v in slim.get_model_variables()]
        assert names and all(n.startswith(network_fn.scope + "/") for n in names)
        head = [n for n in names if n.startswith(network_fn.head_scope + "/")]
        assert {f"{network_fn.head_scope}/biases", f"{network_fn.head_scope}/weights"} <= set(head)
        assert all("feature_norm" in n for n in set(head) - {f"{network_fn.head_scope}/biases",
                                                             f"{network_fn.head_scope}/weights"})
        assert tf.losses.get_regularization_losses()
        assert "score" in end_points


def test_resnet_head_is_resnet_v2_logits_over_the_pooled_features():
    assert nets.get_network_fn("resnet_v2_50").head_scope == "resnet_v2/logits"
    network_fn = nets.get_network_fn("resnet_v2_tiny")
    assert network_fn.scope == "resnet_v2"
    with tf.Graph().as_default():
        score, end_points = network_fn(tf.zeros([2, 48, 48, 3]), is_training=False)
        assert end_points["features"].shape.as_list() == [2, 1, 1, 64]
        assert end_points["features"].op.name == "resnet_v2/pool5"  # the global pool
        head = sorted(v.op.name for v in slim.get_model_variables("resnet_v2/logits"))
        assert head == ["resnet_v2/logits/biases", "resnet_v2/logits/weights"]
        # reused: the second tower makes no new variables
        count = len(tf.global_variables())
        network_fn(tf.zeros([2, 48, 48, 3]), is_training=False, reuse=True)
        assert len(tf.global_variables()) == count


def test_batch_norm_training_step_updates_moving_statistics():
    """The compat shims let slim's batch norm (UPDATE_OPS path) train."""
    network_fn = nets.get_network_fn("resnet_v2_tiny")
    with tf.Graph().as_default(), tf.Session() as sess:
        images = tf.random.uniform([4, 32, 32, 3], 0, 255, seed=1)
        score, _ = network_fn(network_fn.preprocess(images), is_training=True)
        loss = tf.reduce_mean(tf.square(score - 1.0))
        train_op = slim.learning.create_train_op(loss, tf.train.GradientDescentOptimizer(0.01))
        moving = [v for v in tf.global_variables() if "moving_mean" in v.op.name][0]
        sess.run(tf.global_variables_initializer())
        before = sess.run(moving)
        first = sess.run(train_op)
        assert np.isfinite(first)
        assert not np.allclose(before, sess.run(moving)), "UPDATE_OPS did not run"


def test_two_branch_has_one_towers_variables_and_same_scores(rng):
    network_fn = nets.get_network_fn("resnet_v2_tiny")
    x1 = rng.uniform(0, 255, size=(6, 32, 32, 3)).astype(np.float32)
    x2 = rng.uniform(0, 255, size=(6, 32, 32, 3)).astype(np.float32)
    with tf.Graph().as_default() as one_pass_graph:
        images = tf.constant(np.concatenate([x1, x2]))
        scores, _ = siamese.one_pass_scores(network_fn, network_fn.preprocess(images), 6, False)
        one_tower = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            values = sess.run({v.op.name: v for v in tf.global_variables()})
            one_pass = sess.run(scores)
    with tf.Graph().as_default():
        out1, out2 = siamese.two_branch_scores(
            network_fn, network_fn.preprocess(tf.constant(x1)),
            network_fn.preprocess(tf.constant(x2)), False)
        two_branch = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
        assert two_branch == one_tower
        with tf.Session() as sess:
            for v in tf.global_variables():
                v.load(values[v.op.name], sess)
            s1, s2 = sess.run([out1, out2])
    assert one_pass.shape == (2, 6)
    np.testing.assert_allclose(np.concatenate([s1, s2]).reshape(2, 6), one_pass, rtol=1e-5,
                               atol=1e-5)
    del one_pass_graph


@pytest.mark.parametrize("name,blocks,width", [
    ("vgg_16_pooled", ("conv4", "conv5"), 2 * (512 + 512)),
    ("efficientnet_lite0", ("head",), 2 * 1280),
    ("vit_s14", ("block_2",), 2 * 384 + 2 * 384),  # + the final CLS and mean token
])
def test_pooled_heads_read_the_configured_blocks(name, blocks, width):
    network_fn = nets.get_network_fn(name, pooled_blocks=blocks)
    assert network_fn.pooled_blocks == blocks
    with tf.Graph().as_default():
        _, end_points = network_fn(tf.zeros([2, 56, 56, 3]), is_training=False)
        assert end_points["features"].shape.as_list() == [2, 1, 1, width]


def test_pooled_blocks_are_checked():
    with tf.Graph().as_default():
        network_fn = nets.get_network_fn("efficientnet_lite0", pooled_blocks=("stage_9",))
        with pytest.raises(ValueError, match=r"efficientnet_lite0 has no block 'stage_9'; choose "
                                             r"from \[.*'stage_7'"):
            network_fn(tf.zeros([1, 32, 32, 3]), is_training=False)
    with pytest.raises(ValueError, match="resnet_v2_tiny has no pooled head"):
        nets.get_network_fn("resnet_v2_tiny", pooled_blocks=("block4",))


def test_a_runs_pooled_blocks_reach_scoring(label_file, tmp_path):
    """Scoring builds the head a run trained (rankiqa.json), not the network's default, whose
    head would not fit the checkpoint."""
    from rankiqa.run import rundir
    from rankiqa.serve import scoring
    from rankiqa.preprocessing.views import Views
    from rankiqa_testkit import finetune_config

    # what a finetune run with these blocks leaves: its checkpoint and its rankiqa.json
    cfg = finetune_config(label_file, "scratch", **{
        "net.name": "efficientnet_lite0", "net.pooled_blocks": "[stage_7, head]"})
    network_fn = nets.get_network_fn("efficientnet_lite0", pooled_blocks=("stage_7", "head"))
    with tf.Graph().as_default(), tf.Session() as sess:
        network_fn(tf.zeros([1, 32, 32, 3]), is_training=False)
        sess.run(tf.global_variables_initializer())
        tf.train.Saver().save(sess, str(tmp_path / "model.ckpt-1"), write_meta_graph=False)
    rundir.write_run_info(str(tmp_path), "finetune", cfg, "efficientnet_lite0", 32,
                          Views(32, 1))
    assert tf.train.load_variable(str(tmp_path / "model.ckpt-1"),
                                  "efficientnet_lite0/logits/weights").shape == \
        (1, 1, 2 * (320 + 1280), 1)
    with scoring.load_scorer(str(tmp_path), device="cpu") as scorer:
        assert scorer.score_batch(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1,)
