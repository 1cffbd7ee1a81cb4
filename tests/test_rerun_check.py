"""scripts/dev/rerun_check.py: one finetune command twice, the weights compared bit for bit."""

import json

import pytest

from rankiqa_testkit import finetune_config, import_script

rerun_check = import_script("dev/rerun_check")


def tiny_args(label_file, stage_one):
    return ["--config", "finetune_tiny", "--init", stage_one,
            "--set", f"data.label_file={label_file}", "--set", "data.crop_size=32",
            "--set", "data.batch_size=4", "--set", "train.max_steps=2",
            "--set", "train.eval_every=0"]


def test_the_tiny_net_reruns_bit_identically_and_another_seed_is_told_apart(
        label_file, stage_one, tmp_path, capsys):
    work = tmp_path / "rerun"
    assert rerun_check.main([str(work), "--", *tiny_args(label_file, stage_one)]) == 0
    report = json.loads((work / "rerun.json").read_text())
    assert report["differing"] == 0 and report["max_difference"] == 0.0
    assert report["variables"] > 10  # the model's variables, not the optimizer's slots
    assert "bit-identical: 0 of" in capsys.readouterr().out

    # the comparison itself sees a difference: the first run against another seed's
    from rankiqa.train import finetune

    other = str(tmp_path / "other")
    finetune.train(finetune_config(label_file, stage_one, **{
        "train.max_steps": 2, "train.eval_every": 0, "train.seed": 1}), other, device="cpu",
        log=lambda line: None)
    gap = rerun_check.compare(str(work / "run_1"), other)
    assert gap["differing"] > 0 and gap["max_difference"] > 0


def test_an_existing_run_or_a_train_dir_is_refused(label_file, stage_one, tmp_path):
    (tmp_path / "run_1").mkdir()
    with pytest.raises(SystemExit, match="run_1 exists: give a new WORK_DIR"):
        rerun_check.main([str(tmp_path), "--", *tiny_args(label_file, stage_one)])
    assert list(tmp_path.iterdir()) == [tmp_path / "run_1"]  # nothing deleted
    with pytest.raises(SystemExit, match="--train-dir is the script's own"):
        rerun_check.main([str(tmp_path / "x"), "--", "--train-dir", "elsewhere"])
    with pytest.raises(SystemExit, match="python scripts/dev/rerun_check.py WORK_DIR"):
        rerun_check.main([str(tmp_path / "x")])
