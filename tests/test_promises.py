"""The README's promises, each run end to end as a user meets it: through the command line,
in a process of its own where the promise is about processes."""

import csv
import json
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from rankiqa.run import rundir
from rankiqa.cli import main
from rankiqa_testkit import tiny_rank_overrides

ROOT = os.path.join(os.path.dirname(__file__), "..")
TIMEOUT = 240


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def rankiqa(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "rankiqa", *map(str, args)],
                          capture_output=True, text=True, timeout=TIMEOUT, **kwargs)


def _error_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    return lines[-1]


def test_a_full_disk_and_a_read_only_output_are_one_error_line(stage_one, photo_dir, tmp_path):
    def small_files():  # a file over 200 bytes fails to grow, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    out = tmp_path / "scores.csv"
    result = rankiqa("predict", photo_dir, "--model", stage_one, "--output", out,
                     preexec_fn=small_files)
    assert result.returncode == 1
    line = _error_line(result.stderr)
    assert "File too large" in line and str(out) in line and "disk is full" in line
    assert not out.exists() and os.listdir(tmp_path) == []  # nothing half-written left
    out.write_text("an earlier, complete output\n")
    result = rankiqa("predict", photo_dir, "--model", stage_one, "--output", out, "--force",
                     preexec_fn=small_files)
    assert result.returncode == 1 and str(out) in _error_line(result.stderr)
    assert out.read_text() == "an earlier, complete output\n"
    assert os.listdir(tmp_path) == ["scores.csv"]
    result = rankiqa("predict", photo_dir, "--model", stage_one, "--output", "/sys/scores.csv")
    assert result.returncode == 1 and "/sys" in _error_line(result.stderr)


def test_a_full_disk_while_saving_a_checkpoint_names_the_file(rank_data, tmp_path):
    def small_files():  # the tiny net's first checkpoint (~300 KB) cannot be written
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    train_dir = tmp_path / "run"
    sets = [a for o in tiny_rank_overrides(rank_data, **{"train.max_steps": 3})
            for a in ("--set", o)]
    result = rankiqa("train-rank", "--train-dir", train_dir, *sets, preexec_fn=small_files)
    assert result.returncode == 1
    line = _error_line(result.stderr)
    assert f"{train_dir}/model.ckpt-3" in line and "File too large" in line, line
    assert "tempstate" not in line and "disk is full" in line


def test_max_pixels_skips_bombs_in_predict_and_make_rank_data(photo_dir, stage_one, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    with Image.open(os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])) as im:
        im.save(folder / "large.png")  # 96 px on its longer side: over 5,000 pixels
        im.resize((30, 20)).save(folder / "small.png")
    result = invoke("--max-pixels", 5000, "predict", folder, "--model", stage_one)
    assert result.exit_code == 0, result.output
    assert [line.split(",")[0] for line in result.stdout.splitlines()[1:]] == [
        str(folder / "small.png")]
    assert "large.png" in result.stderr and "over the limit of 5,000 (--max-pixels)" in result.stderr
    result = invoke("--max-pixels", 5000, "make-rank-data", folder, "--output-dir",
                    tmp_path / "data", "--skip-bad")
    assert result.exit_code == 0, result.output
    manifest = json.load(open(tmp_path / "data" / "manifest.json"))
    assert manifest["references"] == 1 and len(manifest["skipped_files"]) == 1
    assert "large.png" in manifest["skipped_files"][0]
    result = invoke("--max-pixels", 5000, "make-rank-data", folder, "--output-dir",
                    tmp_path / "refused")
    assert result.exit_code == 1 and "--skip-bad" in result.stderr
    assert not (tmp_path / "refused").exists()


def test_a_stalled_launch_stops_at_its_timeout(rank_data, tmp_path):
    """Both workers go silent (the chief waits forever before its first checkpoint's index, its
    peer in the next collective): the launch stops them after --timeout seconds."""
    marker = tmp_path / "paused"
    # 20 s, not less: two workers importing TensorFlow and building their graphs print nothing
    # for ~10 s on a busy 2-core machine, and the fault must be reached before the launch stops them.
    command = [sys.executable, "-m", "rankiqa", "launch", "--workers", "2", "--timeout", "20",
               "--", "train-rank", "--train-dir", str(tmp_path / "job"), "--device", "cpu"]
    for override in tiny_rank_overrides(rank_data, **{"train.max_steps": 9}):
        command += ["--set", override]
    started = time.time()
    out = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT,
                         env={**os.environ, "RANKIQA_FAULT": "before-index:3",
                              "RANKIQA_FAULT_MARKER": str(marker)})
    assert out.returncode == 1 and marker.exists()
    assert "no worker printed anything for 20 s" in _error_line(out.stderr), out.stderr[-2000:]
    assert time.time() - started < TIMEOUT / 2


def test_the_fault_script_passes_its_fast_case(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "dev", "faults.py"), "--kills",
                          "1", "--work-dir", str(tmp_path / "faults")],
                         capture_output=True, text=True, timeout=2 * TIMEOUT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    cases = [line for line in out.stdout.splitlines() if line.startswith("case: ")]
    assert len(cases) == 12 and all(line.endswith(": ok") for line in cases), out.stdout
    assert out.stdout.strip().splitlines()[-1] == "13 passed, 0 failed"


def test_a_killed_finetune_resumes(stage_one, label_file, tmp_path):
    run, marker = tmp_path / "run", tmp_path / "paused"
    sets = {"net.name": "resnet_v2_tiny", "init.source": stage_one,
            "data.label_file": label_file, "data.crop_size": 32, "data.batch_size": 4,
            "data.eval_crops": 1, "train.max_steps": 4, "train.save_every": 2,
            "train.eval_every": 2}
    command = [sys.executable, "-m", "rankiqa", "finetune", "--train-dir", str(run), "--device",
               "cpu"] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "RANKIQA_FAULT": "before-index:2",
                                 "RANKIQA_FAULT_MARKER": str(marker)})
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), "the run never reached its first checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    out = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "at step 2" in out.stderr and "resumed from" in out.stderr
    history = json.load(open(run / "eval.json"))["history"]
    assert [h["step"] for h in history] == [2, 4]


def test_evaluate_is_refused_while_its_output_is_in_use(stage_one, label_file, tmp_path):
    out = tmp_path / "eval"
    with rundir.locked(str(out), "another evaluate"):
        result = invoke("evaluate", "--model", stage_one, "--set", f"data.label_file={label_file}",
                        "--output-dir", out)
    assert result.exit_code == 1
    assert f"is in use by another evaluate (pid {os.getpid()}" in result.stderr
    assert not (out / "summary.json").exists()


def test_evaluate_never_replaces_its_label_file_and_needs_force_for_old_results(
        stage_one, label_file, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    labels = out / "predictions.csv"  # the label file where evaluate writes its predictions
    labels.write_text(open(label_file).read())
    root = os.path.dirname(os.path.abspath(label_file))
    sets = ["--set", f"data.label_file={labels}", "--set", f"data.image_root={root}",
            "--split", "all"]
    result = invoke("evaluate", "--model", stage_one, *sets, "--output-dir", out, "--force")
    assert result.exit_code == 1 and "is, holds or lies inside the input" in result.stderr
    assert labels.read_text() == open(label_file).read()
    sets[1] = f"data.label_file={label_file}"
    assert invoke("evaluate", "--model", stage_one, *sets, "--output-dir", tmp_path / "b"
                  ).exit_code == 0
    summary = (tmp_path / "b" / "summary.json").read_text()
    result = invoke("evaluate", "--model", stage_one, *sets, "--crops", 1, "--output-dir",
                    tmp_path / "b")
    assert result.exit_code == 1 and "already exists; pass --force" in result.stderr
    assert (tmp_path / "b" / "summary.json").read_text() == summary
    result = invoke("evaluate", "--model", stage_one, *sets, "--crops", 1, "--output-dir",
                    tmp_path / "b", "--force")
    assert result.exit_code == 0 and json.load(open(tmp_path / "b" / "summary.json"))["crops"] == 1


def test_evaluate_aggregates_by_median_on_another_split(stage_one, label_file, tmp_path):
    result = invoke("evaluate", "--model", stage_one, "--set", f"data.label_file={label_file}",
                    "--split", "train", "--crops", 3, "--crop-mode", "grid", "--aggregate",
                    "median", "--output-dir", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    summary = json.load(open(tmp_path / "eval" / "summary.json"))
    assert summary["split"] == "train" and summary["aggregate"] == "median"
    assert summary["srocc"] == summary["median"]["srocc"] != summary["mean"]["srocc"]
    rows = open(tmp_path / "eval" / "predictions.csv").read().splitlines()[1:]
    assert len(rows) == summary["count"] > 30  # the training part, not the validation one


def test_export_onnx_needs_force_to_replace(stage_one, tmp_path):
    out = tmp_path / "model.onnx"
    assert invoke("export-onnx", "--model", stage_one, "--output", out).exit_code == 0
    first = out.read_bytes()
    result = invoke("export-onnx", "--model", stage_one, "--output", out)
    assert result.exit_code == 1 and "already exists; pass --force" in result.stderr
    assert out.read_bytes() == first
    assert invoke("export-onnx", "--model", stage_one, "--output", out, "--force").exit_code == 0


def test_device_gpu_without_a_gpu_is_one_line(stage_one, photo_dir):
    from rankiqa.compat import tf

    if tf.config.list_physical_devices("GPU"):
        pytest.fail("this test checks the message on a machine without a GPU")
    result = invoke("predict", photo_dir, "--model", stage_one, "--device", "gpu")
    assert result.exit_code == 1
    assert "--device gpu: TensorFlow sees no GPU here" in result.stderr


def test_ladders_photos_with_model_option(stage_one, photo_dir, tmp_path):
    result = invoke("ladders", photo_dir, "--model", stage_one, "--families", "gblur",
                    "--count", 2, "--max-side", 64, "--output-dir", tmp_path / "l")
    assert result.exit_code == 0, result.output
    assert "notice" not in result.stderr  # the current spelling, no deprecation notice
    summary = json.load(open(tmp_path / "l" / "ladders.json"))
    assert summary["photos"] == 2 and list(summary["families"]) == ["gblur"]


def test_export_npy_exclude_drops_a_scope(stage_one, tmp_path):
    out = tmp_path / "w.npz"
    result = invoke("export-npy", "--model", stage_one, "--output", out, "--exclude",
                    "resnet_v2/logits")
    assert result.exit_code == 0, result.output
    with np.load(out) as arrays:
        names = list(arrays.files)
    assert names and not [n for n in names if n.startswith("resnet_v2/logits")]
    assert "resnet_v2/conv1/weights" in names


def test_predict_output_never_replaces_a_photo_and_needs_force_for_an_old_output(
        stage_one, photo_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    name = sorted(os.listdir(photo_dir))[0]
    original = open(os.path.join(photo_dir, name), "rb").read()
    (photos / name).write_bytes(original)
    result = invoke("predict", photos, "--model", stage_one, "--output", photos / name, "--force")
    assert result.exit_code == 1 and "is, holds or lies inside the input" in result.stderr
    assert (photos / name).read_bytes() == original
    out = tmp_path / "scores.csv"
    assert invoke("predict", photos, "--model", stage_one, "--output", out).exit_code == 0
    first = out.read_text()
    result = invoke("predict", photos, "--model", stage_one, "--output", out)
    assert result.exit_code == 1 and "already exists; pass --force" in result.stderr
    assert out.read_text() == first
    assert invoke("predict", photos, "--model", stage_one, "--output", out,
                  "--force").exit_code == 0


def test_predict_names_what_it_cannot_read_and_never_hangs(stage_one, photo_dir, tmp_path):
    """FIFOs and devices are named and skipped (opening one would block forever), symbolic
    links to folders are followed once, a name with a carriage return or non-UTF-8 bytes keeps
    its own row, and a strip whose upscale to the view would be huge is skipped."""
    photos = tmp_path / "photos"
    photos.mkdir()
    with Image.open(os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])) as im:
        photo = im.convert("RGB")
    photo.save(photos / "a.png")
    photo.save(photos / "odd\rname.png")
    photo.save(os.path.join(os.fsencode(photos), b"lat\xe9in1.png"))
    Image.new("RGB", (20000, 4)).save(photos / "strip.png")  # 80,000 pixels, 4 high
    os.mkfifo(photos / "pipe.jpg")
    (tmp_path / "elsewhere").mkdir()
    photo.save(tmp_path / "elsewhere" / "linked.png")
    os.symlink(tmp_path / "elsewhere", photos / "link")
    os.symlink(photos, tmp_path / "elsewhere" / "back")  # a loop: listed once
    out = tmp_path / "scores.csv"
    result = rankiqa("--max-pixels", 100_000, "predict", photos, "/dev/null", "--model",
                     stage_one, "--output", out)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(out, newline="", encoding="utf-8", errors="surrogateescape") as f:
        names = sorted(os.path.relpath(r["path"], photos) for r in csv.DictReader(f))
    assert names == ["a.png", "lat\udce9in1.png", "link/linked.png", "odd\rname.png"]
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped: ")]
    assert any("pipe.jpg: not a regular file (a FIFO)" in line for line in skipped), skipped
    assert any("/dev/null: not a regular file (a device)" in line for line in skipped), skipped
    assert any("strip.png: 20000x4 pixels: upscaling its shorter side to the view's 48" in line
               and "(--max-pixels)" in line for line in skipped), skipped
    assert len(skipped) == 3 and "scored 4 images" in result.stderr
    result = rankiqa("predict", photos / "pipe.jpg", "--model", stage_one, "--format", "json")
    assert result.returncode == 1 and "nothing could be scored (1 path skipped" in _error_line(
        result.stderr)


def test_predict_fails_when_nothing_is_scored_and_keeps_the_old_output(stage_one, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    out = tmp_path / "scores.csv"
    out.write_text("an earlier, complete output\n")
    for inputs in ([empty], [tmp_path / "missing.jpg"], [tmp_path / "notes.txt"]):
        result = invoke("predict", *inputs, "--model", stage_one, "--output", out, "--force")
        assert result.exit_code == 1 and "nothing could be scored" in result.stderr
    assert out.read_text() == "an earlier, complete output\n"


def test_nan_weights_are_an_error_naming_the_model(stage_one, photo_dir, tmp_path):
    good = tmp_path / "good.npz"
    assert invoke("export-npy", "--model", stage_one, "--output", good).exit_code == 0
    arrays = dict(np.load(good))
    name = next(n for n in arrays if n.endswith("logits/biases"))
    arrays[name] = np.full_like(arrays[name], np.nan)
    np.savez(tmp_path / "nan.npz", **arrays)
    for fmt in ("csv", "json"):
        result = invoke("predict", photo_dir, "--model", tmp_path / "nan.npz", "--net",
                        "resnet_v2_tiny", "--format", fmt)
        assert result.exit_code == 1 and result.stdout == ""
        assert (f"error: the model {tmp_path / 'nan.npz'} gives non-finite scores (nan): its "
                "weights hold NaN or infinite values") in result.stderr


EAGER_HOST = '''
import sys
import tensorflow as tf
import rankiqa
from rankiqa import config as config_lib  # noqa: F401 - what once switched modes
from rankiqa.run import rundir
from rankiqa.train import rank

stage_one, photo, rank_list, train_dir = sys.argv[1:]
assert tf.executing_eagerly(), "import rankiqa"
with rankiqa.load_model(stage_one) as model:
    score = model.score(photo)
assert tf.executing_eagerly(), "load_model().score()"
cfg = config_lib.load(config_lib.RankConfig, None, [
    "net.name=resnet_v2_tiny", f"data.rank_list={rank_list}", "data.crop_size=32",
    "data.references_per_batch=2", "data.holdout_references=2", "data.eval_crops=1",
    "train.max_steps=1"])
rank.train(cfg, train_dir, device="cpu", log=lambda line: None)
assert tf.executing_eagerly(), "a training call"
total = tf.constant([1.0, 2.0]) + 1.0  # the host's own TensorFlow 2 code
print(type(score).__name__, total.numpy().tolist())
'''


def test_rankiqa_leaves_the_host_process_in_eager_mode(stage_one, photo_dir, rank_data,
                                                       tmp_path):
    photo = os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])
    out = subprocess.run([sys.executable, "-c", EAGER_HOST, stage_one, photo, rank_data,
                          str(tmp_path / "run")], capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["float", "[2.0,", "3.0]"]
