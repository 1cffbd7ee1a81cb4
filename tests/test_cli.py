import os

from click.testing import CliRunner

from rankiqa.cli import main
from rankiqa_testkit import tiny_rank_overrides


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


COMMANDS = ["calibrate", "demo", "evaluate", "export-npy", "export-onnx", "export-pb",
            "export-savedmodel", "finetune", "inspect-ckpt", "ladders", "launch",
            "make-rank-data", "merge-ckpt", "merge-scores", "models", "predict", "rate", "scale", "serve",
            "suggest-labels", "teach", "train-rank"]


def test_help_lists_every_command_and_each_has_help():
    assert sorted(main.commands) == COMMANDS
    result = invoke("--help")
    assert result.exit_code == 0
    # grouped as a user thinks of them: score, label, train, evaluate, export, tools
    sections = result.output.split("Options:")[1].split("\n\n")[1:]
    headings = [s.strip().splitlines()[0] for s in sections]
    assert headings == ["Score:", "Label:", "Train:", "Evaluate:", "Export:", "Tools:"]
    listed = [line.split()[0] for s in sections for line in s.strip().splitlines()[1:]]
    assert sorted(listed) == COMMANDS and listed[0] == "predict"
    for command in COMMANDS:
        result = invoke(command, "--help")
        assert result.exit_code == 0 and result.output.startswith(f"Usage: main {command}")


def test_a_bug_keeps_its_traceback_and_user_errors_are_one_line(monkeypatch, tmp_path):
    """A plain ValueError is a bug, not bad input: it is not swallowed into one line."""
    from rankiqa.train import rank

    def broken(*args, **kwargs):
        raise ValueError("internal invariant broken")

    monkeypatch.setattr(rank, "train", broken)
    monkeypatch.setattr("rankiqa.run.checks.train_rank", lambda config: None)  # no rank list given
    result = invoke("train-rank", "--train-dir", tmp_path)
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)
    assert "error: internal invariant broken" not in result.stderr


def test_make_rank_data_writes_and_prints_the_list(photo_dir, tmp_path):
    result = invoke("make-rank-data", photo_dir, "--output-dir", tmp_path / "out", "--distortions", "gblur,impulse",
                    "--workers", 2, "--seed", 1)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "out" / "rank_list.csv")
    assert "wrote 66 images in 12 groups from 6 references" in result.stderr


def test_make_rank_data_bad_input_is_one_line_and_nonzero(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jpg").write_bytes(b"\xff\xd8 not really")
    result = invoke("make-rank-data", tmp_path / "src", "--output-dir", tmp_path / "out")
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "a.jpg: not a readable image" in last
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()

    result = invoke("make-rank-data", tmp_path / "src", "--output-dir", tmp_path / "out", "--distortions", "fog")
    assert result.exit_code == 1 and "unknown distortion 'fog'" in result.stderr


def test_train_rank_config_errors(tmp_path, rank_data):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 3\n")
    result = invoke("train-rank", "--config", bad, "--train-dir", tmp_path / "run")
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: {bad}: unknown key train.stepz; TrainConfig takes "
                                     "deterministic, devices, eval_every, frozen_batch_norm, "
                                     "keep_checkpoints, log_every, loss, margin, max_steps, "
                                     "precision, save_every, seed, strategy, summary_every, "
                                     "trainable_scopes")
    result = invoke("train-rank", "--train-dir", tmp_path / "run")
    assert result.exit_code == 1 and "needs data.rank_list" in result.stderr
    result = invoke("train-rank", "--train-dir", tmp_path / "run",
                    *sum((["--set", o] for o in tiny_rank_overrides(rank_data, **{"net.name": "alexnet"})), []))
    assert result.exit_code == 1 and "unknown network 'alexnet'" in result.stderr


def test_train_rank_runs_and_reports_accuracy(tmp_path, rank_data):
    args = sum((["--set", o] for o in tiny_rank_overrides(rank_data, **{"train.max_steps": 3})), [])
    result = invoke("train-rank", "--train-dir", tmp_path / "run", "--device", "cpu", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("held-out rank_accuracy ")
    assert os.path.isfile(tmp_path / "run" / "eval.json")


def test_init_and_its_old_spellings(tmp_path, rank_data, stage_one):
    args = sum((["--set", o] for o in tiny_rank_overrides(rank_data, **{"train.max_steps": 1})), [])
    result = invoke("train-rank", "--train-dir", tmp_path / "a", "--init", stage_one, *args)
    assert result.exit_code == 0, result.output
    assert "restored" in result.stderr and "notice" not in result.stderr
    result = invoke("train-rank", "--train-dir", tmp_path / "b", "--init-checkpoint", stage_one,
                    *args)
    assert result.exit_code == 0, result.output
    assert ("notice: --init-checkpoint is renamed --init (init.source); it still works for now"
            in result.stderr)
    result = invoke("finetune", "--train-dir", tmp_path / "c", "--from-scratch", "--init", "x",
                    "--set", "data.label_file=x.csv")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: --init and --from-scratch each name the start; "
                                     "give --init once")
    assert "--init SOURCE" in invoke("finetune", "--help").output


def test_an_unwritable_output_fails_before_any_scoring(stage_one, photo_dir, tmp_path):
    (tmp_path / "a_file").write_text("")
    result = invoke("predict", photo_dir, "--model", stage_one, "--output",
                    tmp_path / "a_file" / "scores.csv")
    assert result.exit_code == 1 and result.stderr.startswith("error: ")
    assert "a_file" in result.stderr and "Traceback" not in result.output
    assert "scored" not in result.stderr  # refused before the model was even loaded


def test_a_corrupt_checkpoint_is_one_line_unless_debug(stage_one, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(stage_one, broken)
    for name in os.listdir(broken):
        if ".data-" in name:
            (broken / name).write_bytes(b"\0" * 64)
    result = invoke("inspect-ckpt", broken, "--tensor", "resnet_v2/conv1/weights")
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: cannot read resnet_v2/conv1/weights from ")
    result = invoke("predict", broken, "--model", broken)
    assert result.exit_code == 1 and result.stderr.startswith("error: cannot read ")
    result = invoke("--debug", "inspect-ckpt", broken, "--tensor", "resnet_v2/conv1/weights")
    assert result.exit_code == 1 and result.exception is not None
    assert not isinstance(result.exception, SystemExit)


def test_tensorflow_start_up_lines_are_hidden_unless_verbose(tmp_path):
    """A command's stderr holds its own lines only; --verbose shows TensorFlow's too."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "rankiqa", "inspect-ckpt", str(tmp_path / "missing")]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",
                                                             "RANKIQA_VERBOSE")}
    quiet = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 1
    assert quiet.stderr.splitlines() == [f"error: checkpoint {tmp_path / 'missing'} does not "
                                         "exist (give a prefix like model.ckpt-1000 or a "
                                         "training directory)"]
    command.insert(3, "--verbose")
    loud = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert loud.returncode == 1 and loud.stderr.splitlines()[-1] == quiet.stderr.splitlines()[0]
    assert len(loud.stderr.splitlines()) > 1  # TensorFlow's own lines (CPU features, CUDA stubs)


def test_a_reader_that_stops_early_is_no_error():
    """`rankiqa models | head -1`: the pipe closes, the command ends quietly with status 0."""
    import subprocess
    import sys

    out = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m rankiqa models "
                                        "| head -c 1"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_the_library_hides_tensorflows_native_lines_even_after_the_users_own_import(stage_one):
    import subprocess
    import sys

    script = ("import tensorflow, sys, numpy as np, rankiqa\n"
              "sys.stderr.write('---\\n'); sys.stderr.flush()\n"
              f"m = rankiqa.load_model({stage_one!r}, engine='tensorflow')\n"
              "print(m(np.zeros((64, 64, 3), np.uint8)))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",
                                                             "RANKIQA_VERBOSE")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.split("---\n", 1)[1] == ""  # what follows the user's own import


def test_one_word_per_role_and_the_old_spellings_with_a_notice(stage_one, photo_dir, tmp_path):
    import numpy as np

    new = invoke("export-npy", "--model", stage_one, "--output", tmp_path / "a.npz")
    assert new.exit_code == 0 and "notice" not in new.stderr, new.output
    assert new.stdout.strip() == str(tmp_path / "a.npz")  # every export prints what it wrote
    old = invoke("export-npy", stage_one, tmp_path / "b.npz")
    assert old.exit_code == 0, old.output
    assert ("notice: `rankiqa export-npy CHECKPOINT OUT` is now `rankiqa export-npy --model "
            "CHECKPOINT --output OUT`; the old form still works for now") in old.stderr
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert sorted(a) == sorted(b) and all((a[k] == b[k]).all() for k in a)
    # one role given twice, or missing: click's usage error, exit status 2
    twice = invoke("export-npy", stage_one, "--model", stage_one, "--output", tmp_path / "c.npz")
    assert twice.exit_code == 2 and "--model is given twice" in twice.output
    assert invoke("export-pb", "--model", stage_one).exit_code == 2
    # predict: --model, and --checkpoint with a notice, give the same scores
    by_model = invoke("predict", photo_dir, "--model", stage_one)
    by_checkpoint = invoke("predict", photo_dir, "--checkpoint", stage_one)
    assert by_model.exit_code == by_checkpoint.exit_code == 0
    assert by_model.stdout == by_checkpoint.stdout and "notice" not in by_model.stderr
    assert "`rankiqa predict --checkpoint` is renamed --model" in by_checkpoint.stderr
    by_npz = invoke("predict", photo_dir, "--model", tmp_path / "a.npz", "--net",
                    "resnet_v2_tiny", "--crop-size", 48, "--crops", 2, "--crop-mode",
                    "centre_random")
    assert [line.split(",")[1] for line in by_npz.stdout.splitlines()] == [
        line.split(",")[1] for line in by_model.stdout.splitlines()]
    # merge-ckpt writes a folder: --output-dir (--output still works)
    merged = invoke("merge-ckpt", stage_one, "--output", tmp_path / "m")
    assert merged.exit_code == 0 and "is renamed --output-dir" in merged.stderr
    # each command's --set example is one of its own keys
    evaluate_help = " ".join(invoke("evaluate", "--help").output.split())
    assert "--set data.split_seed=1" in evaluate_help and "train.max_steps" not in evaluate_help
    # --init lists the pretrained starts
    finetune_help = " ".join(invoke("finetune", "--help").output.split())
    assert "efficientnet-lite2 (efficientnet_lite2)" in finetune_help


def test_usage_errors_read_alike_whoever_finds_them():
    """click's parse errors and rankiqa's own usage errors: the usage, the help hint, one
    `error:` line in the style of every other error, exit status 2."""
    cases = {("export-pb",): "error: missing option '--model'",  # rankiqa's own check
             ("evaluate", "--model", "x"): "error: missing option '--output-dir'",  # click's
             ("predict",): "error: missing argument 'PATHS...' (or --from-list FILE)",
             ("predict", "x", "--nosuch"): "error: no such option '--nosuch'",
             ("nosuch",): "error: no such command 'nosuch'"}
    for args, line in cases.items():
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        lines = result.stderr.splitlines()
        assert lines[-1] == line, result.stderr
        assert lines[0].startswith("Usage: main") and "--help' for help." in lines[1]
        assert "Error:" not in result.stderr


BEFORE_TENSORFLOW = """
import sys
from click.testing import CliRunner
from rankiqa.cli import main
for args, expected in CASES:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and expected in result.stderr, (args, result.output)
    assert "tensorflow" not in sys.modules, args
print("ok")
"""


def test_bad_input_is_refused_before_tensorflow_starts(tmp_path):
    """Seconds of TensorFlow start-up are not spent to say that a path does not exist."""
    import subprocess
    import sys

    (tmp_path / "empty").mkdir()
    (tmp_path / "labels.csv").write_text("path,score\nmissing.png,0.5\n")
    missing, train = str(tmp_path / "missing"), str(tmp_path / "run")
    cases = [
        (["predict", missing], "nothing could be scored (1 path skipped"),
        (["predict", str(tmp_path / "empty")], "nothing could be scored (no image files"),
        (["predict", str(tmp_path / "empty"), "--model", missing], f"model {missing}: no such"),
        (["evaluate", "--model", missing, "--output-dir", train], f"model {missing}: no such"),
        (["export-onnx", "--model", missing, "--output", f"{train}.onnx"], "no such training"),
        (["ladders", str(tmp_path), "--model", missing, "--output-dir", train], "no such"),
        (["train-rank", "--config", "rank_tiny", "--train-dir", train, "--set",
          f"data.rank_list={missing}.csv"], "does not exist"),
        (["finetune", "--config", "finetune_tiny", "--train-dir", train, "--init", "scratch",
          "--set", f"data.label_file={tmp_path / 'labels.csv'}"], "missing.png"),
        (["finetune", "--config", "finetune_tiny", "--train-dir", train, "--init", "scratch",
          "--set", f"data.label_file={missing}.csv"], "does not exist"),
        (["evaluate", "--model", "biq2021-efficientnet-lite2", "--output-dir", train, "--set",
          f"data.label_file={tmp_path / 'labels.csv'}"], "missing.png")]
    script = f"CASES = {cases!r}\n{BEFORE_TENSORFLOW}"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_the_commands_offer_exactly_the_librarys_choices():
    """Every choice list of the CLI is the library's own: a value the CLI lets through is one
    the library takes, and none it takes is missing."""
    from rankiqa.run import device
    from rankiqa.serve import active, scoring
    from rankiqa.data import mos
    from rankiqa.preprocessing import views
    from rankiqa.train import distribute

    library = {"device": device.DEVICES, "precision": device.PRECISIONS,
               "strategy": distribute.STRATEGIES, "engine": scoring.ENGINES,
               "aggregate": scoring.AGGREGATES, "crop_mode": views.VIEW_MODES,
               "split": mos.SPLITS, "selection": active.STRATEGIES}
    seen = set()
    for command in main.commands.values():
        for param in command.params:
            if param.name in library and hasattr(param.type, "choices"):
                assert tuple(param.type.choices) == tuple(library[param.name]), (
                    command.name, param.name)
                seen.add(param.name)
    assert seen == set(library)


def test_each_training_command_offers_its_own_shipped_configs():
    rank_help, finetune_help = invoke("train-rank", "--help"), invoke("finetune", "--help")
    assert "rank_tiny" in rank_help.stdout and "finetune_tiny" not in rank_help.stdout
    assert "finetune_tiny" in finetune_help.stdout and "rank_tiny" not in finetune_help.stdout
