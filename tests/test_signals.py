"""Stage two's training signals: built from the config, composed by the stage without a
branch, each scored where it asks to be."""

import numpy as np
import pytest

from rankiqa import nets
from rankiqa.compat import tf
from rankiqa.train import finetune, signals
from rankiqa_testkit import finetune_config


def test_the_config_names_the_signals_in_their_scoring_order():
    cfg = finetune_config("labels.csv", **{"signals.teacher_table": "t.csv",
                                           "signals.rank_list": "r.csv",
                                           "signals.rank_batch_norm": "moving",
                                           "signals.teacher_weight": 4.0})
    found = signals.from_config(cfg)
    assert [s.name for s in found] == ["mos", "teacher", "rank"]
    assert [s.batch for s in found] == [(4, "data.batch_size"),
                                        (16, "signals.teacher_views_per_batch"),
                                        (2, "signals.rank_references_per_batch")]
    assert [s.weight for s in found] == [1.0, 4.0, 1.0]
    assert signals.find(found, "rank").own_pass  # moving statistics: a pass of its own
    frozen = finetune_config("labels.csv", **{"signals.rank_list": "r.csv",
                                              "signals.rank_batch_norm": "moving",
                                              "finetune.frozen_batch_norm": True})
    assert not signals.find(signals.from_config(frozen), "rank").own_pass  # one pass is one
    assert [s.name for s in signals.from_config(finetune_config("labels.csv"))] == ["mos"]
    assert signals.find(signals.from_config(finetune_config("labels.csv")), "rank") is None
    with pytest.raises(ValueError, match="unknown ranking loss 'triplet'"):
        signals.from_config(finetune_config("labels.csv", **{"signals.rank_list": "r.csv",
                                                             "signals.rank_loss": "triplet"}))


def test_each_signal_gets_its_own_images_scores_from_one_pass():
    """`score_signals` splits one pass over every signal's images back into each signal's
    scores, and scores an ``own_pass`` signal on its own: in inference mode each equals the
    network on that signal's images alone."""
    network_fn = nets.get_network_fn("resnet_v2_tiny")
    wanted = (signals.Mos(1.0, 2, "l2", 32),
              signals.Teacher("t.csv", 1.0, 3, "l2", 32),
              signals.RankHinge("r.csv", 1.0, 1, "operator", 0.05, 32, own_pass=True))
    rng = np.random.default_rng(0)
    images = {s.name: rng.integers(0, 256, (n, 32, 32, 3)).astype(np.float32)
              for s, n in zip(wanted, (2, 3, 4))}
    with tf.Graph().as_default(), tf.Session() as sess:
        batch = {name: {"images": tf.constant(x)} for name, x in images.items()}
        scores = finetune.score_signals(network_fn, batch, wanted, training=True)
        assert set(scores) == {"mos", "teacher", "rank"}
        alone = {name: network_fn(network_fn.preprocess(tf.constant(x)), is_training=False,
                                  reuse=True)[0] for name, x in images.items()}
        with tf.variable_scope(tf.get_variable_scope(), reuse=True):
            inference = finetune.score_signals(network_fn, batch, wanted, training=False)
        sess.run(tf.global_variables_initializer())
        got, want, one_pass = sess.run([scores, alone, inference])
    assert {k: v.shape for k, v in got.items()} == {"mos": (2,), "teacher": (3,), "rank": (4,)}
    np.testing.assert_allclose(got["rank"], want["rank"], rtol=1e-5, atol=1e-6)  # own pass
    for name in images:
        np.testing.assert_allclose(one_pass[name], want[name], rtol=1e-5, atol=1e-6)


def test_an_own_pass_reads_the_moving_statistics_before_the_step_updates_them():
    """Side by side, which moving statistics the own pass read would depend on the threads'
    timing (the same command twice gave other weights under load): every batch-norm update of
    the training pass waits for it."""
    network_fn = nets.get_network_fn("resnet_v2_tiny")
    wanted = (signals.Mos(1.0, 2, "l2", 32),
              signals.RankHinge("r.csv", 1.0, 1, "operator", 0.05, 32, own_pass=True))
    with tf.Graph().as_default():
        batch = {"mos": {"images": tf.zeros([2, 32, 32, 3])},
                 "rank": {"images": tf.zeros([4, 32, 32, 3])}}
        scores = finetune.score_signals(network_fn, batch, wanted, training=True)
        updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        assert updates

        def waits_for(op, target, seen):
            if op is target:
                return True
            seen.add(op)
            return any(waits_for(parent, target, seen)
                       for parent in [t.op for t in op.inputs] + list(op.control_inputs)
                       if parent not in seen)

        own = scores["rank"].op
        assert all(waits_for(op, own, set()) for op in updates)
        assert not waits_for(own, scores["mos"].op, set())  # and not the other way round
