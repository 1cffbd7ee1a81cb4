"""Run folders: one process at a time, relocatable, and never silently started over."""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from rankiqa import config as config_lib
from rankiqa.run import rundir
from rankiqa.weights import restore
from rankiqa.compat import tf
from rankiqa.errors import InputError
from rankiqa.train import finetune, rank
from rankiqa_testkit import finetune_config, model_values, tiny_rank_overrides
from rankiqa_testkit import train_tiny_rank as train


def dead_pid():
    """The pid of a process that has ended."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


def test_a_second_process_is_refused_and_a_dead_ones_lock_is_taken_over(rank_data, tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / rundir.LOCK_NAME).write_text(json.dumps(
            {"pid": sleeper.pid, "host": socket.gethostname(), "command": "train-rank",
             "since": "2026-11-28 10:00:00"}))
        with pytest.raises(ValueError, match=rf"run is in use by train-rank \(pid {sleeper.pid} "
                                             rf"on {socket.gethostname()} since 2026-11-28"):
            train(rank_data, tmp_path / "run")
        assert not (tmp_path / "run" / "checkpoint").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    result, lines = train(rank_data, tmp_path / "run", **{"train.max_steps": 1})
    assert result["step"] == 1
    assert any(f"taking over the lock of process {sleeper.pid}" in line for line in lines)
    assert not (tmp_path / "run" / rundir.LOCK_NAME).exists()  # released at the end


@pytest.mark.parametrize("content", ['{"pid": "abc", "host": "vm"}', "[1, 2]", "not json"])
def test_a_lock_this_program_did_not_write_is_named(tmp_path, content):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / rundir.LOCK_NAME).write_text(content)
    with pytest.raises(InputError, match=r"run/.lock is not a lock this program wrote .*; if "
                                         "no command uses the folder, delete it"):
        with rundir.locked(str(tmp_path / "run"), "train-rank"):
            pass
    assert (tmp_path / "run" / rundir.LOCK_NAME).read_text() == content


def test_a_copied_or_moved_run_folder_is_its_own(rank_data, tmp_path):
    train(rank_data, tmp_path / "a", **{"train.max_steps": 3})
    index = (tmp_path / "a" / "checkpoint").read_text()
    assert str(tmp_path) not in index and '"model.ckpt-3"' in index  # relative names
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    result, lines = train(rank_data, tmp_path / "copy", **{"train.max_steps": 6})
    assert any("at step 3" in line for line in lines) and result["step"] == 6
    assert not np.array_equal(model_values(str(tmp_path / "a"))["resnet_v2/conv1/weights"],
                              model_values(str(tmp_path / "copy"))["resnet_v2/conv1/weights"])
    os.rename(tmp_path / "a", tmp_path / "moved")
    assert restore.latest_checkpoint(str(tmp_path / "moved")).endswith("moved/model.ckpt-3")


def test_a_run_killed_mid_write_resumes_from_what_is_intact(rank_data, tmp_path):
    run = tmp_path / "run"
    train(rank_data, run, **{"train.max_steps": 9, "train.keep_checkpoints": 5})
    # as a kill leaves it: no index, the newest checkpoint truncated, a temporary shard, an
    # evaluation never written, and more checkpoints than keep_checkpoints
    os.remove(run / "checkpoint")
    (data,) = [p for p in os.listdir(run) if p.startswith("model.ckpt-9.data")]
    with open(run / data, "r+b") as f:
        f.truncate(100)
    (run / "model.ckpt-12_temp").mkdir()
    (run / "model.ckpt-12_temp" / "part-00000-of-00001.data-00000-of-00001.tempstate1").touch()
    (run / f"eval.json.partial-{dead_pid()}").write_text("{")
    evaluation = json.load(open(run / "eval.json"))
    assert [h["step"] for h in evaluation["history"]] == [3, 6, 9]
    result, lines = train(rank_data, run, **{"train.max_steps": 12, "train.keep_checkpoints": 2})
    assert any("model.ckpt-9 cannot be read" in line and "using the one before" in line
               for line in lines)
    assert any("resumed from" in line and "at step 6" in line for line in lines)
    assert result["step"] == 12
    history = json.load(open(run / "eval.json"))["history"]
    assert [h["step"] for h in history] == [3, 6, 9, 12]  # 9 redone, none lost or repeated
    left = sorted(os.listdir(run))
    assert not [p for p in left if "temp" in p or ".partial-" in p]
    assert [s for s, _ in restore.checkpoints_on_disk(str(run))] == [12, 9]  # pruned to keep


def test_checkpoints_that_cannot_be_read_are_never_silently_replaced(rank_data, stage_one,
                                                                     tmp_path):
    run = tmp_path / "run"
    shutil.copytree(stage_one, run)  # one checkpoint, at step 2
    for name in os.listdir(run):
        if ".data-" in name:
            (run / name).write_bytes(b"")
    with pytest.raises(ValueError, match="holds 1 checkpoints but none can be read; move them"):
        train(rank_data, run, **{"train.max_steps": 6})


def test_finetune_from_a_truncated_start_reports_nothing_as_restored(stage_one, label_file,
                                                                     tmp_path):
    start = tmp_path / "start"
    shutil.copytree(stage_one, start)
    (data,) = [p for p in os.listdir(start) if ".data-" in p]
    with open(start / data, "r+b") as f:
        f.truncate(64)
    with pytest.raises(ValueError, match="cannot read .* from"):
        finetune.train(finetune_config(label_file, str(start)), str(tmp_path / "ft"),
                       device="cpu", log=lambda line: None)
    assert not (tmp_path / "ft" / "restore_report.json").exists()
    assert tf.train.latest_checkpoint(str(tmp_path / "ft")) is None


def test_bad_images_are_all_named_before_the_first_step_or_skipped(rank_data, label_file,
                                                                   stage_one, tmp_path):
    from rankiqa.data import mos
    from rankiqa.data.images import BadImageError

    data = tmp_path / "data"
    shutil.copytree(os.path.dirname(rank_data), data)
    zero = data / "images" / "astronaut" / "astronaut_wn_3.png"
    zero.write_bytes(b"")
    truncated = data / "images" / "chelsea" / "chelsea_gblur_2.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    rank_list = str(data / "rank_list.csv")
    with pytest.raises(BadImageError, match=r"2 ranking images cannot be read: .*astronaut_wn_3"
                                            r".*chelsea_gblur_2.*--skip-bad"):
        train(rank_list, tmp_path / "run")
    assert not os.path.exists(tmp_path / "run")  # a failed start leaves no empty folder
    cfg = config_lib.load(config_lib.RankConfig, None,
                          tiny_rank_overrides(rank_list, **{"train.max_steps": 2}))
    lines = []
    rank.train(cfg, str(tmp_path / "skip"), device="cpu", log=lines.append, skip_bad=True)
    assert sum(line.startswith("skipped: ") for line in lines) == 2
    split = next(line for line in lines if "held-out groups" in line)
    assert sum(int(w) for w in split.split() if w.isdigit()) == 22  # 24 groups less the 2 bad
    # stage two: the same check over the label file
    items = mos.read_dataset("csv", label_file)
    labels = tmp_path / "labels.csv"
    mos.write_generic_csv(str(labels), [dataclasses.replace(items[0], path=str(zero))] + items[1:])
    with pytest.raises(BadImageError, match="1 labelled images cannot be read: .*astronaut_wn_3"):
        finetune.train(finetune_config(str(labels), stage_one), str(tmp_path / "ft"),
                       device="cpu", log=lambda line: None)
    result = finetune.train(finetune_config(str(labels), stage_one, **{"train.max_steps": 1}),
                            str(tmp_path / "ft2"), device="cpu", log=lambda line: None,
                            skip_bad=True)
    assert result["step"] == 1


@pytest.mark.parametrize("fault", ["before-index:6", "before-rename:eval.json"])
def test_killed_inside_a_write_the_rerun_resumes_cleanly(rank_data, tmp_path, fault):
    """kill -9 at an exact moment: after checkpoint 6's data but before its index (which then
    names an absolute path of the old writer), or between writing eval.json aside and renaming
    it into place."""
    import signal
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "rankiqa.cli", "train-rank", "--train-dir", str(run),
           "--device", "cpu"]
    for override in tiny_rank_overrides(rank_data, **{"train.max_steps": 9}):
        cmd += ["--set", override]
    marker = tmp_path / "paused"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "RANKIQA_FAULT": fault,
                                 "RANKIQA_FAULT_MARKER": str(marker)})
    deadline = time.time() + 240
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), "the run never reached the fault point"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert (run / rundir.LOCK_NAME).exists()  # a dead process's lock, taken over below
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    expected = 6 if fault.startswith("before-index") else 3
    assert f"at step {expected}" in out.stderr
    history = json.load(open(run / "eval.json"))["history"]
    assert [h["step"] for h in history] == [3, 6, 9]
    assert not [p for p in os.listdir(run) if ".tmp-" in p or "temp" in p]
    assert '"model.ckpt-9"' in (run / "checkpoint").read_text()


def test_training_removes_only_its_own_leftovers_never_a_users_files(rank_data, tmp_path):
    run = tmp_path / "run"
    (run / "build_temp").mkdir(parents=True)
    (run / "build_temp" / "thesis.tex").write_text("x")
    # names that begin like the run's own files but are not what an interrupted write leaves
    (run / "checkpoints_temp").mkdir()
    (run / "checkpoints_temp" / "notes.txt").write_text("my notes")
    mine = ("meeting_temp", "photo.tmp-2024", "report.partial-final", "tempstate_notes.txt",
            "model.ckpt_old_temp", "eval.json.partial-backup", "rankiqa.json.tmp-2024",
            "probe.json_temp", "checkpoint.tmpnotes")
    for name in mine:
        (run / name).write_text("mine")
    (run / "model.ckpt-7_temp").mkdir()  # a TF-named folder holding a user's file: kept
    (run / "model.ckpt-7_temp" / "draft.txt").write_text("mine")
    dead = dead_pid()
    ours = (f"eval.json.partial-{dead}", "checkpoint.tmp" + "0" * 32,
            "model.ckpt-3.index.tempstate123")
    for name in ours:  # what interrupted writes of a run leave
        (run / name).write_text("{")
    (run / "model.ckpt-3_temp").mkdir()
    (run / "model.ckpt-3_temp" / "part-00000-of-00001.data-00000-of-00001").write_text("")
    train(rank_data, run, **{"train.max_steps": 1})
    left = set(os.listdir(run))
    assert {"build_temp", "checkpoints_temp", "model.ckpt-7_temp", *mine} <= left
    assert (run / "build_temp" / "thesis.tex").read_text() == "x"
    assert (run / "checkpoints_temp" / "notes.txt").read_text() == "my notes"
    assert not {*ours, "model.ckpt-3_temp"} & left


def test_an_output_never_replaces_an_input_given_as_a_checkpoint_prefix(stage_one, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(stage_one, run)
    (prefix,) = [str(run / n[:-len(".index")]) for n in os.listdir(run) if n.endswith(".index")]
    for out, inputs in ((str(run), [prefix]), (prefix + ".index", [prefix]),
                        (str(run / "w.npz"), [prefix + ".index"])):
        with pytest.raises(ValueError, match="is, holds or lies inside the input"):
            rundir.check_output(out, inputs, force=True)
    assert sorted(os.listdir(run)) == sorted(os.listdir(stage_one))


def test_a_rerun_with_another_config_is_refused_with_the_keys_named(rank_data, tmp_path):
    run = tmp_path / "run"
    train(rank_data, run, **{"train.max_steps": 3, "train.margin": 2.0})
    record = (run / rundir.RUN_INFO_NAME).read_text()
    with pytest.raises(InputError, match=r"run was trained with another config \(optim.lr 0.001 "
                                         r"-> 0.5, train.margin 2.0 -> 1.0\); resuming would "
                                         ".*train into a new --train-dir"):
        train(rank_data, run, **{"train.max_steps": 6, "optim.lr": 0.5})
    assert (run / rundir.RUN_INFO_NAME).read_text() == record  # nothing rewritten
    assert restore.latest_checkpoint(str(run)).endswith("model.ckpt-3")
    # how long and how often it trains may change: it resumes, saying so
    result, lines = train(rank_data, run, **{"train.max_steps": 6, "train.margin": 2.0,
                                             "train.log_every": 1})
    assert result["step"] == 6 and any("at step 3" in line for line in lines)
    assert "notice: train.max_steps was 3 at the run's last start, now 6; resuming" in lines
    assert json.loads((run / rundir.RUN_INFO_NAME).read_text())["config"]["train"][
        "max_steps"] == 6


def test_a_run_never_starts_from_inside_its_own_folder(rank_data, label_file, tmp_path):
    run = tmp_path / "run"
    train(rank_data, run, **{"train.max_steps": 3})
    record = (run / rundir.RUN_INFO_NAME).read_text()
    for init in (str(run), str(run / "model.ckpt-3")):
        with pytest.raises(InputError, match=f"--init {init} lies in --train-dir {run}: the "
                                             "run would resume from it as its own"):
            finetune.train(finetune_config(label_file, init), str(run), device="cpu",
                           log=lambda line: None)
    # the other stage's run folder, whatever the start: its checkpoints are not this stage's
    with pytest.raises(InputError, match=f"{run} holds a rank run; finetune would resume from "
                                         f"its checkpoints as its own.*--init {run} starts"):
        finetune.train(finetune_config(label_file), str(run), device="cpu", log=lambda line: None)
    assert (run / rundir.RUN_INFO_NAME).read_text() == record
    assert restore.latest_checkpoint(str(run)).endswith("model.ckpt-3")


def _copy_scores(label_file, out, score):
    """`label_file` with every score replaced by `score(old)`."""
    import csv

    rows = list(csv.DictReader(open(label_file)))
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "score": f"{score(float(r['score'])):.6f}"} for r in rows)
    return str(out)


def test_tied_validation_labels_finish_the_run_and_its_reruns(stage_one, label_file, tmp_path):
    """Every validation SROCC undefined: nothing is kept, the run says so, and a rerun resumes
    rather than crashing at its first evaluation."""
    ties = _copy_scores(label_file, tmp_path / "ties.csv", lambda s: 0.5)
    cfg = finetune_config(ties, stage_one, **{"train.max_steps": 4, "train.eval_every": 2,
                                               "train.save_every": 2})
    for _ in range(2):
        lines = []
        result = finetune.train(cfg, str(tmp_path / "run"), device="cpu", log=lines.append)
        assert result["step"] == 4 and result["kept"] is None
        assert any("no evaluation gave a srocc" in line and "its last checkpoint" in line
                   for line in lines)
    evaluation = json.loads((tmp_path / "run" / "eval.json").read_text(),
                            parse_constant=lambda c: pytest.fail(f"bare {c} in eval.json"))
    assert evaluation["srocc"] is None and evaluation["kept"] is None
    assert restore.resolve_checkpoint(str(tmp_path / "run")).endswith("run/model.ckpt-4")


def test_a_best_between_regular_checkpoints_survives_a_kill(stage_one, label_file, tmp_path):
    """kill -9 after a new best at a step with no regular checkpoint: the rerun resumes from an
    earlier checkpoint and keeps that best (its figure recorded beside it), not a worse one."""
    extra = {"optim.lr": 0.02, "optim.optimizer": "sgd", "train.max_steps": 6,
             "train.eval_every": 1, "train.save_every": 1, "train.keep_checkpoints": 10}
    run = tmp_path / "run"
    finetune.train(finetune_config(label_file, stage_one, **extra), str(run), device="cpu",
                   log=lambda line: None)
    best = json.loads((run / "best" / "best.json").read_text())
    assert best["step"] >= 2, best  # else there is no earlier checkpoint to resume from
    for step, prefix in restore.checkpoints_on_disk(str(run)):
        if step >= best["step"]:  # what the kill undid
            tf.train.remove_checkpoint(prefix)
    resumed = best["step"] - 1
    lines = []
    result = finetune.train(finetune_config(label_file, stage_one, **{
        **extra, "train.max_steps": resumed}), str(run), device="cpu", log=lines.append)
    assert f"resumed from {run}/model.ckpt-{resumed} at step {resumed}" in lines
    assert result["kept"] == best
    assert restore.resolve_checkpoint(str(run)) == str(run / "best" / f"model.ckpt-{best['step']}")


def test_a_damaged_best_checkpoint_is_dropped_at_the_rerun(stage_one, label_file, tmp_path):
    extra = {"optim.lr": 0.02, "optim.optimizer": "sgd", "train.max_steps": 6,
             "train.eval_every": 1, "train.save_every": 6}
    run = tmp_path / "run"
    result = finetune.train(finetune_config(label_file, stage_one, **extra), str(run),
                            device="cpu", log=lambda line: None)
    (data,) = (run / "best").glob("*.data-*")
    data.write_bytes(data.read_bytes()[:100])
    lines = []
    result = finetune.train(finetune_config(label_file, stage_one, **{
        **extra, "train.max_steps": 8}), str(run), device="cpu", log=lines.append)
    assert any(line.startswith("warning: the run's best checkpoint ") and "cannot be read" in line
               for line in lines)
    kept = restore.resolve_checkpoint(str(run))
    assert restore.checkpoint_problem(kept) is None
    assert result["kept"]["step"] in (7, 8) and kept.endswith(f"model.ckpt-{result['kept']['step']}")


def test_checkpoints_without_their_run_description_are_not_resumed(stage_one, label_file,
                                                                   tmp_path):
    for source, stage in ((stage_one, "rank"), (None, "finetune")):
        run = tmp_path / f"{stage}_run"
        if source:
            shutil.copytree(source, run)
        else:
            finetune.train(finetune_config(label_file, stage_one), str(run), device="cpu",
                           log=lambda line: None)
        os.remove(run / rundir.RUN_INFO_NAME)
        before = sorted(os.listdir(run))
        with pytest.raises(InputError, match=f"{run} holds checkpoints but no rankiqa.json: "
                                             "nothing says which stage and config"):
            finetune.train(finetune_config(label_file, stage_one, **{"train.max_steps": 5}),
                           str(run), device="cpu", log=lambda line: None)
        assert sorted(os.listdir(run)) == before


def test_a_lowered_keep_checkpoints_is_honoured_at_the_resume(stage_one, label_file, tmp_path):
    run = tmp_path / "run"
    extra = {"train.max_steps": 4, "train.save_every": 1, "train.keep_best": "false"}
    finetune.train(finetune_config(label_file, stage_one, **extra), str(run), device="cpu",
                   log=lambda line: None)
    assert len(restore.checkpoints_on_disk(str(run))) == 4
    finetune.train(finetune_config(label_file, stage_one, **{
        **extra, "train.max_steps": 6, "train.keep_checkpoints": 1}), str(run), device="cpu",
        log=lambda line: None)
    assert [s for s, _ in restore.checkpoints_on_disk(str(run))] == [6]
    assert [os.path.basename(p) for p in tf.train.get_checkpoint_state(
        str(run)).all_model_checkpoint_paths] == ["model.ckpt-6"]


@pytest.mark.parametrize("name,content", [
    ("rankiqa.json", '{"stage": "fin'), ("rankiqa.json", "[]"), ("eval.json", '{"history": ['),
    ("eval.json", '{"history": [{"srocc": 0.5}]}')])
def test_a_damaged_run_file_is_named_not_a_traceback(stage_one, label_file, tmp_path, name,
                                                     content):
    run = tmp_path / "run"
    extra = {"train.max_steps": 2, "train.save_every": 1, "train.eval_every": 1}
    finetune.train(finetune_config(label_file, stage_one, **extra), str(run), device="cpu",
                   log=lambda line: None)
    (run / name).write_text(content)
    with pytest.raises(InputError, match=f"{run / name} is damaged .*restore it from a copy, or "
                                         "move it away"):
        finetune.train(finetune_config(label_file, stage_one, **{**extra, "train.max_steps": 3}),
                       str(run), device="cpu", log=lambda line: None)


def test_a_tie_with_the_last_step_is_not_called_above(tmp_path):
    from rankiqa.train import stage

    rundir.write_json_atomic(str(tmp_path / rundir.RUN_INFO_NAME), {"stage": "finetune"})
    lines = []
    stage.record_kept(str(tmp_path), {"kept": {"step": 5, "srocc": -0.2}, "step": 10,
                                      "eval": {"srocc": -0.2}}, "srocc", lines.append)
    assert lines == ["the run's model is step 5's checkpoint (best/): validation srocc -0.2000, "
                     "equal to the last step's -0.2000 (train.keep_best)"]
