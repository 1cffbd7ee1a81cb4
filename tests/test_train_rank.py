import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rankiqa.compat import slim, tf
from rankiqa.train import loop
from rankiqa_testkit import tiny_rank_overrides
from rankiqa_testkit import train_tiny_rank as train


def reader_names(ckpt_dir):
    return [name for name, _ in tf.train.list_variables(str(ckpt_dir))]


def test_train_writes_checkpoints_eval_and_resumes(rank_data, tmp_path):
    result, lines = train(rank_data, tmp_path)
    assert result["step"] == 6
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-6")
    evaluation = json.load(open(tmp_path / "eval.json"))
    assert 0.0 <= evaluation["rank_accuracy"] <= 1.0
    assert [h["step"] for h in evaluation["history"]] == [3, 6]
    assert set(evaluation["per_distortion"]) == {"gblur", "wn", "jpeg", "jp2k"}
    assert any(line.startswith("step 2/6") and "loss" in line for line in lines)
    # TensorBoard (installed with rankiqa) reads the scalars under their own names, and the
    # held-out accuracy at each evaluation
    from tensorboard.backend.event_processing import event_accumulator

    events = event_accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    tags = {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert tags["loss"] == tags["total_loss"] == tags["learning_rate"] == [2, 4, 6]
    assert tags["validation/rank_accuracy"] == [3, 6]
    assert not [t for t in tags if t.endswith("_1")]
    info = json.load(open(tmp_path / "rankiqa.json"))
    assert info["net"] == "resnet_v2_tiny" and info["crop_size"] == 32
    assert info["views"] == {"crop": 48, "count": 2, "mode": "centre_random"}

    result, lines = train(rank_data, tmp_path, **{"train.max_steps": 9})
    assert any("resumed from" in line and "at step 6" in line for line in lines)
    assert result["step"] == 9
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-9")


def test_nan_loss_names_steps_and_last_good_checkpoint(rank_data, tmp_path, monkeypatch):
    from rankiqa.train import stage

    train(rank_data, tmp_path)
    # a NaN margin makes the loss NaN from the resumed step on; a rerun under another margin
    # is refused (test_rundir), so here alone the margin may change at a resume
    monkeypatch.setattr(stage, "RESUMABLE", stage.RESUMABLE + ("train.margin",))
    with pytest.raises(loop.TrainingDiverged,
                       match=r"loss became nan .* step 7; last good checkpoint: .*model\.ckpt-6"):
        train(rank_data, tmp_path, **{"train.max_steps": 12, "train.margin": ".nan"})
    # nothing written after the divergence
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-6")


def test_killed_run_continues_from_last_checkpoint(rank_data, tmp_path):
    """A real process killed mid-run; the same command resumes at the checkpoint's step."""
    cmd = [sys.executable, "-m", "rankiqa.cli", "train-rank", "--train-dir", str(tmp_path),
           "--device", "cpu"]
    for override in tiny_rank_overrides(rank_data, **{"train.max_steps": 100000,
                                                      "train.save_every": 5,
                                                      "train.eval_every": 0}):
        cmd += ["--set", override]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(tmp_path / "checkpoint"):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the newest checkpoint on disk, as a resume finds it: a kill between a checkpoint's files
    # and TensorFlow's `checkpoint` state file leaves that file one save behind
    from rankiqa.weights import restore

    saved = restore.latest_checkpoint(str(tmp_path), verify=True)
    assert saved is not None, "no checkpoint before the kill"
    saved_step = int(saved.rsplit("-", 1)[1])

    cmd[cmd.index("train.max_steps=100000")] = f"train.max_steps={saved_step + 3}"
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"at step {saved_step}" in out.stderr
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith(f"model.ckpt-{saved_step + 3}")


def test_official_imagenet_names_are_mapped_and_head_skipped(rank_data, tmp_path):
    """A checkpoint written under slim's official names (resnet_v2_50/..., 1001 classes)."""
    from tf_slim.nets import resnet_utils, resnet_v2

    from rankiqa.nets import resnet

    official = tmp_path / "official"
    with tf.Graph().as_default(), tf.Session() as sess:
        with slim.arg_scope(resnet_utils.resnet_arg_scope()):
            resnet_v2.resnet_v2(tf.zeros([1, 32, 32, 3]), resnet._resnet_v2_tiny_blocks(),
                                num_classes=1001, scope="resnet_v2_50")
        sess.run(tf.global_variables_initializer())
        conv1 = sess.run(slim.get_unique_variable("resnet_v2_50/conv1/weights"))
        tf.train.Saver().save(sess, str(official / "model.ckpt"))
    with pytest.raises(ValueError, match="matches no model variable .* init.source_scope"):
        train(rank_data, tmp_path / "refused", **{"init.source": str(official / "model.ckpt")})
    result, lines = train(rank_data, tmp_path / "run", **{
        "init.source": str(official / "model.ckpt"), "init.source_scope": "resnet_v2_50",
        "train.max_steps": 1,
        "optim.lr": 0.0, "net.weight_decay": 0.0})
    assert any("excluded (left at initialiser): resnet_v2/logits/weights" in l for l in lines)
    assert any("shape mismatch" in l for l in lines) is False  # the 1001-way head was excluded
    restored = next(l for l in lines if l.startswith("restored"))
    # every tiny-net variable but the two of the head
    n_model = len([v for v in reader_names(tmp_path / "run") if v.startswith("resnet_v2/")
                   and "Adam" not in v])
    assert restored.startswith(f"restored {n_model - 2} variables")
    reader = tf.train.load_checkpoint(str(tmp_path / "run"))
    np.testing.assert_array_equal(reader.get_tensor("resnet_v2/conv1/weights"), conv1)


def test_same_seed_same_weights(rank_data, tmp_path):
    """train.deterministic: the same command twice gives bit-identical weights."""
    train(rank_data, tmp_path / "a", **{"train.max_steps": 4})
    train(rank_data, tmp_path / "b", **{"train.max_steps": 4})
    train(rank_data, tmp_path / "c", **{"train.max_steps": 4, "train.seed": 1})
    a, b, c = (tf.train.load_checkpoint(str(tmp_path / k)) for k in "abc")
    names = [n for n in a.get_variable_to_shape_map() if n.startswith("resnet_v2/")]
    assert all(np.array_equal(a.get_tensor(n), b.get_tensor(n)) for n in names)
    assert not all(np.array_equal(a.get_tensor(n), c.get_tensor(n)) for n in names)


def test_trainable_scopes_train_only_those_scopes(rank_data, tmp_path):
    train(rank_data, tmp_path / "start", **{"train.max_steps": 0})
    scopes = "[resnet_v2/block4, resnet_v2/logits]"
    train(rank_data, tmp_path / "run", **{"train.max_steps": 3, "train.trainable_scopes": scopes})
    start, run = (tf.train.load_checkpoint(str(tmp_path / k)) for k in ("start", "run"))
    names = [n for n in start.get_variable_to_shape_map()
             if n.startswith("resnet_v2/") and "/Adam" not in n]
    changed = {n for n in names if not np.array_equal(start.get_tensor(n), run.get_tensor(n))}
    assert changed and all(n.startswith(("resnet_v2/block4/", "resnet_v2/logits/"))
                           for n in changed)
    assert "resnet_v2/logits/weights" in changed
    with pytest.raises(ValueError, match="train.trainable_scopes \\['nope'\\] match no"):
        train(rank_data, tmp_path / "bad", **{"train.trainable_scopes": "[nope]"})


def test_held_out_accuracy_is_the_scorers_views_of_every_level(rank_data, tmp_path):
    """eval.json's rank_accuracy equals scoring each held-out image with the saved model and
    the run's views (centre_random, one seed for every level), then ranking per group."""
    from rankiqa import metrics
    from rankiqa.serve import scoring
    from rankiqa.data import lists
    from rankiqa.data.images import load_image

    train(rank_data, tmp_path, **{"train.max_steps": 3, "train.eval_every": 0})
    evaluation = json.load(open(tmp_path / "eval.json"))
    groups = [g for g in lists.read_rank_list(rank_data)
              if g.reference in evaluation["held_out_references"]]
    with scoring.load_scorer(str(tmp_path)) as scorer:
        scores = np.stack([scorer.score_items([load_image(p) for p in g.paths])
                           for g in groups])
    assert len(groups) == evaluation["groups"] == 8
    assert evaluation["rank_accuracy"] == metrics.pair_accuracy(scores)
