import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from rankiqa.weights import restore
from rankiqa.cli import main
from rankiqa.compat import tf
from rankiqa.errors import InputError
from rankiqa.train import finetune
from rankiqa.weights.restore import CheckpointError
from rankiqa_testkit import finetune_config, model_values


def test_restores_everything_but_the_head(stage_one, label_file, tmp_path):
    lines = []
    result = finetune.train(finetune_config(label_file, stage_one), str(tmp_path), device="cpu",
                            log=lines.append)
    report = result["restore_report"]
    stage_one_names = set(model_values(stage_one))
    assert {m for m, _ in report.restored} == {n for n in stage_one_names
                                                if not n.startswith("resnet_v2/logits/")}
    assert sorted(report.excluded) == ["resnet_v2/logits/biases", "resnet_v2/logits/weights"]
    assert not report.missing and not report.shape_mismatch
    saved = json.load(open(tmp_path / "restore_report.json"))
    assert len(saved["restored"]) == len(stage_one_names) - 2
    assert any(line.startswith(f"restored {len(stage_one_names) - 2} variables") for line in lines)
    evaluation = json.load(open(tmp_path / "eval.json"))
    assert {"srocc", "plcc", "krocc", "rmse"} <= set(evaluation)
    # TensorBoard shows the validation figures of each evaluation (here: the end, step 3)
    from tensorboard.backend.event_processing import event_accumulator

    events = event_accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    for name in ("srocc", "plcc", "krocc"):
        (scalar,) = events.Scalars(f"validation/{name}")
        assert scalar.step == 3 and scalar.value == pytest.approx(evaluation[name], abs=1e-6)


def test_trainable_scopes_leave_frozen_variables_bit_identical(stage_one, label_file, tmp_path):
    cfg = finetune_config(label_file, stage_one, **{"finetune.trainable_scopes": "[resnet_v2/logits]"})
    finetune.train(cfg, str(tmp_path), device="cpu", log=lambda line: None)
    before, after = model_values(stage_one), model_values(str(tmp_path))
    changed = [n for n in before if not np.array_equal(before[n], after[n])]
    assert changed and all(n.startswith("resnet_v2/logits/") for n in changed)
    assert "resnet_v2/logits/weights" in after


def test_l1_loss_and_resume(stage_one, label_file, tmp_path):
    cfg = finetune_config(label_file, stage_one, **{"train.loss": "l1"})
    finetune.train(cfg, str(tmp_path), device="cpu", log=lambda line: None)
    lines = []
    cfg = finetune_config(label_file, stage_one, **{"train.loss": "l1", "train.max_steps": 5})
    result = finetune.train(cfg, str(tmp_path), device="cpu", log=lines.append)
    assert result["step"] == 5 and any("at step 3" in line for line in lines)
    assert not any(line.startswith("restored") for line in lines)  # resume, not init


def test_checkpoint_matching_nothing_is_refused(label_file, tmp_path):
    other = tmp_path / "other"
    with tf.Graph().as_default(), tf.Session() as sess:
        tf.Variable(1.0, name="unrelated/v")
        sess.run(tf.global_variables_initializer())
        tf.train.Saver().save(sess, str(other / "model.ckpt"))
    with pytest.raises(CheckpointError, match="matches no model variable"):
        finetune.train(finetune_config(label_file, str(other)), str(tmp_path / "run"),
                       device="cpu", log=lambda line: None)
    with pytest.raises(InputError, match="not 'scratch', a checkpoint, training folder or .npz"):
        finetune.train(finetune_config(label_file, str(tmp_path / "nope")), str(tmp_path / "r"),
                       device="cpu", log=lambda line: None)


def test_scratch_trains_from_random_weights_and_a_start_is_required(label_file, tmp_path):
    lines = []
    result = finetune.train(finetune_config(label_file, "scratch"), str(tmp_path / "scratch"),
                            device="cpu", log=lines.append)
    assert result["step"] == 3 and not any(line.startswith("restored") for line in lines)
    with pytest.raises(InputError, match="finetune needs a start: --init STAGE_ONE_DIR"):
        finetune.train(finetune_config(label_file, "null"), str(tmp_path / "none"),
                       device="cpu", log=lambda line: None)


def test_unknown_eval_crop_mode_is_refused_before_training(stage_one, label_file, tmp_path):
    cfg = finetune_config(label_file, stage_one, **{"data.eval_crop_mode": "spiral"})
    with pytest.raises(InputError, match="unknown view mode 'spiral'; choose from"):
        finetune.train(cfg, str(tmp_path), device="cpu", log=lambda line: None)
    assert not (tmp_path / "checkpoint").exists()


def test_a_validation_part_of_one_image_is_refused_before_training(stage_one, label_file,
                                                                   tmp_path):
    rows = open(label_file).read().splitlines()[1:7]  # six images, no references
    (tmp_path / "six.csv").write_text("path,score\n" + "".join(
        ",".join(r.split(",")[:2]) + "\n" for r in rows))
    cfg = finetune_config(str(tmp_path / "six.csv"), stage_one, **{"data.val_fraction": 0.2,
                                                                   "data.batch_size": 2})
    with pytest.raises(InputError, match=r"the validation part holds 1 image of 6; its "
                                         r"correlations need at least 2: raise "
                                         r"data.val_fraction \(now 0.2\)"):
        finetune.train(cfg, str(tmp_path / "run"), device="cpu", log=lambda line: None)
    assert not (tmp_path / "run").exists()


def test_run_info_records_views_and_start(stage_one, finetuned):
    info = json.load(open(os.path.join(finetuned, "rankiqa.json")))
    assert info["views"] == {"crop": 32, "count": 3, "mode": "pyramid"}
    assert info["init"] == stage_one and info["config"]["init"]["source"] == stage_one
    assert json.load(open(os.path.join(finetuned, "eval.json")))["views"]["mode"] == "pyramid"


def test_second_ranking_loss_keeps_regression_and_trains_on_rank_groups(stage_one, label_file,
                                                                        rank_data, tmp_path):
    """With frozen batch norm the rank groups cannot touch the regression's scores: weight 0
    gives the regression-only weights (to float rounding: the larger batch computes its
    convolutions in another order, ~5e-7); a positive weight moves them far more, and the rank
    loss and accuracy are logged."""
    common = {"finetune.frozen_batch_norm": "true", "data.cache_decoded": "false"}
    finetune.train(finetune_config(label_file, stage_one, **common), str(tmp_path / "plain"),
                   device="cpu", log=lambda line: None)
    lines = []
    finetune.train(finetune_config(label_file, stage_one, **common, **{
        "signals.rank_list": rank_data, "signals.rank_weight": 0.0}),
        str(tmp_path / "weight0"), device="cpu", log=lines.append)
    plain, weight0 = model_values(str(tmp_path / "plain")), model_values(str(tmp_path / "weight0"))
    assert max(np.abs(plain[n] - weight0[n]).max() for n in plain) < 1e-5
    assert any(line.startswith("second loss: ranking on ") for line in lines)
    assert any("rank_loss" in line and "rank_accuracy" in line for line in lines)

    finetune.train(finetune_config(label_file, stage_one, **common, **{
        "signals.rank_list": rank_data, "signals.rank_weight": 10.0}),
        str(tmp_path / "weight10"), device="cpu", log=lambda line: None)
    weight10 = model_values(str(tmp_path / "weight10"))
    assert max(np.abs(plain[n] - weight10[n]).max() for n in plain) > 1e-3


def test_rank_images_on_moving_statistics_leave_the_photos_batch_alone(stage_one, label_file,
                                                                        rank_data, tmp_path):
    """Batch norm on batch statistics: in one pass (rank_batch_norm batch) the rank images
    change the photos' normalisation, so even at weight 0 the weights move off the
    regression-only ones; in their own pass on the moving statistics (moving) they do not
    (to float rounding), and the hinge still trains the network at a positive weight."""
    common = {"finetune.frozen_batch_norm": "false", "data.cache_decoded": "false"}
    log = lambda line: None  # noqa: E731
    finetune.train(finetune_config(label_file, stage_one, **common), str(tmp_path / "plain"),
                   device="cpu", log=log)
    plain = model_values(str(tmp_path / "plain"))
    moved = {}
    for mode, weight in (("batch", 0.0), ("moving", 0.0), ("moving", 10.0)):
        run = str(tmp_path / f"{mode}{weight:g}")
        finetune.train(finetune_config(label_file, stage_one, **common, **{
            "signals.rank_list": rank_data, "signals.rank_weight": weight,
            "signals.rank_batch_norm": mode}), run, device="cpu", log=log)
        values = model_values(run)
        moved[mode, weight] = max(np.abs(plain[n] - values[n]).max() for n in plain)
    assert moved["moving", 0.0] < 1e-5
    assert moved["batch", 0.0] > 1e-3
    assert moved["moving", 10.0] > 1e-3


def test_an_unknown_rank_batch_norm_is_refused(stage_one, label_file, tmp_path):
    cfg = finetune_config(label_file, stage_one, **{"signals.rank_batch_norm": "frozen"})
    with pytest.raises(InputError, match="signals.rank_batch_norm 'frozen'.*batch.*moving"):
        finetune.train(cfg, str(tmp_path / "run"), device="cpu", log=lambda line: None)


def test_second_ranking_loss_refuses_a_missing_list(stage_one, label_file, tmp_path):
    cfg = finetune_config(label_file, stage_one, **{"signals.rank_list": str(tmp_path / "no.csv")})
    with pytest.raises(InputError, match="no.csv"):
        finetune.train(cfg, str(tmp_path / "run"), device="cpu", log=lambda line: None)


def test_a_validation_part_too_small_to_tell_chooses_no_checkpoint(stage_one, label_file,
                                                                     tmp_path):
    extra = {"optim.lr": 0.02, "optim.optimizer": "sgd", "train.max_steps": 3,
             "train.eval_every": 1, "train.save_every": 3, "train.keep_best_from": 100}
    lines = []
    result = finetune.train(finetune_config(label_file, stage_one, **extra), str(tmp_path / "run"),
                            device="cpu", log=lines.append)
    val = result["eval"]["count"]
    assert val < 100 and result["kept"] is None
    assert any(f"validation part of {val} photos, fewer than train.keep_best_from (100): too "
               "few to choose a checkpoint by (SROCC 0.6 on" in line for line in lines)
    assert not os.path.exists(tmp_path / "run" / "best")
    assert restore.resolve_checkpoint(str(tmp_path / "run")).endswith("run/model.ckpt-3")


def test_the_run_keeps_its_best_validated_checkpoint(stage_one, label_file, tmp_path):
    extra = {"optim.lr": 0.02, "optim.optimizer": "sgd", "train.max_steps": 6,
             "train.eval_every": 1, "train.save_every": 6}  # SROCC swings from step to step
    lines = []
    result = finetune.train(finetune_config(label_file, stage_one, **extra), str(tmp_path / "run"),
                            device="cpu", log=lines.append)
    history = json.load(open(tmp_path / "run" / "eval.json"))["history"]
    best = max(history, key=lambda h: h["srocc"])
    assert best["srocc"] - history[-1]["srocc"] > 0.1, history  # else this tests nothing
    assert result["kept"] == {"step": best["step"], "srocc": best["srocc"]}
    assert restore.resolve_checkpoint(str(tmp_path / "run")) == str(
        tmp_path / "run" / "best" / f"model.ckpt-{best['step']}")
    assert json.load(open(tmp_path / "run" / "rankiqa.json"))["kept"]["step"] == best["step"]
    assert any(f"the run's model is step {best['step']}'s checkpoint (best/)" in line
               for line in lines)
    from rankiqa.cli import kept_note  # finetune's closing line names the kept model too

    assert kept_note(str(tmp_path / "run"), "srocc") == (
        f"; the run's model: step {best['step']}'s, srocc {best['srocc']:.4f} (train.keep_best)")
    # what every tool scores is the kept model: evaluate gives that step's validation figure
    out = CliRunner().invoke(main, ["evaluate", "--model", str(tmp_path / "run"),
                                    "--output-dir", str(tmp_path / "eval")])
    assert out.exit_code == 0, out.output
    summary = json.load(open(tmp_path / "eval" / "summary.json"))
    assert summary["srocc"] == pytest.approx(best["srocc"], abs=1e-6)
    # a rerun that trains on keeps it unless a later step is better
    result = finetune.train(finetune_config(label_file, stage_one, **{
        **extra, "train.max_steps": 7}), str(tmp_path / "run"), device="cpu", log=lambda l: None)
    assert result["kept"]["srocc"] >= best["srocc"] and os.listdir(tmp_path / "run" / "best")
    # without keep_best: the last checkpoint is the model, with a warning
    lines = []
    finetune.train(finetune_config(label_file, stage_one, **{**extra, "train.keep_best": "false"}),
                   str(tmp_path / "last"), device="cpu", log=lines.append)
    assert restore.resolve_checkpoint(str(tmp_path / "last")).endswith("last/model.ckpt-6")
    assert kept_note(str(tmp_path / "last"), "srocc") == ""
    assert any(line.startswith("warning: srocc ") and "the run's model is the last" in line
               for line in lines)


def test_a_run_in_a_relative_folder_indexes_its_own_checkpoints(stage_one, label_file, tmp_path,
                                                                 monkeypatch):
    """TensorFlow's own readers (tf.train.latest_checkpoint) find the run's checkpoints
    whatever folder the command ran from."""
    monkeypatch.chdir(tmp_path)
    finetune.train(finetune_config(label_file, stage_one, **{"train.max_steps": 2}),
                   os.path.join("runs", "nested", "ft"), device="cpu", log=lambda line: None)
    with open(tmp_path / "runs" / "nested" / "ft" / "checkpoint") as f:
        assert ".." not in f.read()
    latest = tf.train.latest_checkpoint(str(tmp_path / "runs" / "nested" / "ft"))
    assert latest and latest.endswith("model.ckpt-2")


def test_a_run_is_bound_to_its_labels_and_finds_them_from_any_folder(stage_one, label_file,
                                                                      tmp_path, monkeypatch):
    import shutil

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(label_file, project / "labels.csv")
    monkeypatch.chdir(project)  # the label path as a user types it: relative
    cfg = finetune_config("labels.csv", stage_one, **{"train.max_steps": 2})
    finetune.train(cfg, "run", device="cpu", log=lambda line: None)
    record = json.load(open(project / "run" / "rankiqa.json"))["labels"]
    assert record["rows"] == len(open(label_file).read().splitlines()) - 1
    assert record["from_run"] == os.path.join("..", "labels.csv")
    # the label-more loop: rows appended, the same command again on the same run is refused
    with open("labels.csv", "a") as f:
        f.write(open(label_file).read().splitlines()[1].replace(",", "x.png,", 1) + "\n")
    checkpoints = sorted(os.listdir("run"))
    with pytest.raises(InputError, match=r"labels.csv is not the label file the run started "
                                         rf"with \({record['rows']} rows then, "
                                         rf"{record['rows'] + 1} now.*bound to its labels.*new "
                                         "--train-dir"):
        finetune.train(finetune_config("labels.csv", stage_one, **{"train.max_steps": 4}),
                       "run", device="cpu", log=lambda line: None)
    assert sorted(os.listdir("run")) == checkpoints
    shutil.copy(label_file, "labels.csv")  # the file it trained on: evaluate finds it
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "labels.csv").parent.mkdir()
    (elsewhere / "labels.csv").write_text("path,score\nnot_these.png,0.5\n")
    monkeypatch.chdir(elsewhere)  # another folder with a labels.csv of its own
    out = CliRunner().invoke(main, ["evaluate", "--model", str(project / "run"), "--output-dir",
                                    "eval"])
    assert out.exit_code == 0, out.output
    assert f"labels: {project / 'labels.csv'} (the run's own file" in out.stderr
    (project / "labels.csv").write_text("path,score\n")
    out = CliRunner().invoke(main, ["evaluate", "--model", str(project / "run"), "--output-dir",
                                    "eval2"])
    assert out.exit_code == 1 and "the label file the run " in out.stderr and (
        "--set data.label_file=FILE" in out.stderr)
