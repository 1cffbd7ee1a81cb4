"""Stage two's training signals: built from the config, composed by the stage without a
branch, each scored where it asks to be."""

import os

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


def test_log_ndtr_is_finite_and_exact_into_the_tail_and_the_pair_loss_pulls_the_right_way():
    from scipy import special

    from rankiqa import losses

    x = np.linspace(-40, 10, 501).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        value = tf.constant(x)
        log_p = losses.log_ndtr(value)
        grad, = tf.gradients(tf.reduce_sum(log_p), value)
        left = tf.constant([0.3, 0.5, 0.5])
        right = tf.constant([0.5, 0.5, 0.1])
        outcomes = tf.constant([1.0, 0.5, 0.5])
        pair_loss = losses.thurstone_pair_loss(left, right, outcomes, 0.1)
        pull, = tf.gradients(pair_loss, left)
        got, slope, pulled = sess.run([log_p, grad, pull])
    np.testing.assert_allclose(got, special.log_ndtr(x.astype(np.float64)), rtol=2e-3, atol=1e-5)
    assert np.all(np.isfinite(slope)) and np.all(slope > 0)
    # left chosen though scored lower: raise it; a tie at equal scores: stay; a tie apart: close
    assert pulled[0] < 0 and abs(pulled[1]) < 1e-6 and pulled[2] > 0


def judged(items, path, rng, answers=60, noise=0.05):
    """A judgement file over `items` (label file items) from a simulated observer who sees
    their scores with Gaussian noise."""
    from rankiqa.data import judgements

    root = path.parent
    for _ in range(answers):
        a, b = rng.choice(len(items), 2, replace=False)
        seen = items[a].score - items[b].score + rng.normal(0, noise)
        judgements.append(str(path), [os.path.relpath(items[a].path, root),
                                      os.path.relpath(items[b].path, root),
                                      "left" if seen > 0 else "right", "sim",
                                      judgements.now()], judgements.PAIR_HEADER)
    return str(path)


def test_judgements_train_beside_the_labels_without_the_held_out_photos(label_file, tmp_path,
                                                                         rng):
    from rankiqa.data import mos

    config = finetune_config(label_file)
    parts = mos.load_splits(config.data)
    path = judged(parts["all"], tmp_path / "judgements.csv", rng)
    config = finetune_config(label_file, **{"signals.judgements": path,
                                            "signals.judgement_pairs_per_batch": 4,
                                            "train.max_steps": 2})
    lines = []
    finetune.train(config, str(tmp_path / "run"), device="cpu", log=lines.append)
    held = {it.path for it in parts["val"] + parts["test"]}
    from rankiqa.data import judgements

    read = judgements.read_pairs(path).judgements
    kept = [g for g in read if g.left not in held and g.right not in held]
    found = [line for line in lines if line.startswith("people's comparisons:")]
    assert found and found[0].startswith(f"people's comparisons: {len(kept)} answers")
    assert f"({len(read) - len(kept)} left out" in found[0]
    assert any("judged_loss" in line for line in lines), lines[-5:]


def test_a_judgement_file_as_the_label_file_is_scaled_into_labels_and_trained_on(
        label_file, tmp_path, rng):
    from rankiqa.data import judgements, mos
    from rankiqa.judge import thurstone

    items = mos.load_splits(finetune_config(label_file).data)["all"][:24]
    path = judged(items, tmp_path / "judgements.csv", rng, answers=120)
    lines = []
    run = tmp_path / "run"
    finetune.train(finetune_config(path, **{"signals.judgement_pairs_per_batch": 4,
                                            "train.max_steps": 2}),
                   str(run), device="cpu", log=lines.append)
    written = {os.path.normpath(os.path.join(run, p)): float(s) for p, s in
               (line.split(",") for line in open(run / finetune.JUDGED_LABELS).read().split()[1:])}
    scaled = thurstone.scale(judgements.read_pairs(path).judgements, bootstrap=0)
    assert set(written) == set(scaled.photos)
    np.testing.assert_allclose([written[p] for p in scaled.photos], scaled.scores, atol=1e-5)
    assert any(line.startswith("labels from people's comparisons: 120 answers") for line in lines)
    assert any("judged_loss" in line for line in lines), lines[-5:]
