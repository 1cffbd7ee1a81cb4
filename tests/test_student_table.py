"""scripts/studies/student_table.py: the student ablation's table from its folders."""

import json

from rankiqa_testkit import import_script


def write_row(base, srocc, plcc, ladders, families, steps=None):
    (base / "eval").mkdir(parents=True)
    (base / "ladders").mkdir()
    (base / "eval" / "summary.json").write_text(json.dumps({"srocc": srocc, "plcc": plcc}))
    (base / "ladders" / "ladders.json").write_text(json.dumps({
        "pair_accuracy": ladders,
        "families": {f: {"pair_accuracy": a} for f, a in zip(
            ("gblur", "wn", "jpeg", "contrast"), families)}}))
    if steps:
        (base / "steps.txt").write_text("".join(f"step {k}: {s} s\n" for k, s in steps))


def test_the_table_has_a_row_per_measured_model_with_its_figures(tmp_path, capsys):
    table = import_script("studies/student_table")
    write_row(tmp_path / "reference" / "default", 0.8021, 0.8094, 0.894, (1, 0.9, 0.8, 0.7))
    write_row(tmp_path / "ablation" / "all", 0.81234, 0.82, 0.961, (0.99, 0.98, 0.97, 0.91),
              steps=[("references", 1), ("teach", 3600), ("train", 600), ("head", 180),
                     ("evaluate", 20), ("train", 30), ("head", 25), ("evaluate", 22)])
    (tmp_path / "ablation" / "mos").mkdir(parents=True)  # begun, not measured: no row
    table.main(str(tmp_path))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 4  # header, rule, two rows in the table's order
    assert lines[2].startswith("| the frozen-feature model") and "| 0.8021 | 0.8094 | 0.894 |" in lines[2]
    assert "| — |" in lines[2]  # no steps.txt: no wall time
    assert lines[3].startswith("| all three") and "0.8123 | 0.8200 | 0.961" in lines[3]
    assert "0.990 / 0.980 / 0.970 / 0.910" in lines[3] and "| 13 min |" in lines[3]  # shared steps not counted,
    # nor a finished row's rerun twice (each step counts once, by its longest line)
    assert (tmp_path / "ablation.md").read_text() == out


def test_every_ablation_row_is_data_with_its_command_and_result():
    """The rows file names each row's overrides (groups or key=value) and result; the driver
    builds each row's recipe command from it, the row's own settings last-but-one and the
    400-step schedule of the short rows last, as the recipe takes them."""
    ablation = import_script("studies/student_ablation")
    groups, rows, references = ablation.load_rows()
    assert {"mos", "whole", "whole_pass", "whole_bn_moving_mos1600"} <= set(rows)
    assert all(row["what"] and row["result"] for row in rows.values())
    assert set(references) == {"default", "teacher"}
    env, argv = ablation.command("mos", rows["mos"], groups, "runs/x")
    assert env == {"TEACH_DIR": "runs/x", "MOS_STEPS": "0"}
    assert argv[:3] == ["bash", "scripts/recipes/biq2021_student.sh", "runs/x/ablation/mos"]
    sets = argv[4::2]
    assert argv[3::2] == ["--set"] * len(sets)
    assert sets[0].startswith("finetune.trainable_scopes=[efficientnet_lite2/head,")
    assert sets[1:] == ['signals.teacher_table=""', 'signals.rank_list=""',
                        "train.max_steps=400", "optim.lr_decay_steps=400",
                        "train.eval_every=200"]
    env, argv = ablation.command("whole_rank_teacher", rows["whole_rank_teacher"], groups, "R")
    assert "signals.teacher_table=R/teach_rank/teacher.csv" in argv
    env, _ = ablation.command("whole_pass", rows["whole_pass"], groups, "R")
    assert env["MOS_STEPS"] == "1600"
    assert rows["whole_pass_mos3200"]["reuse"] == "whole_pass"


def test_the_table_describes_each_row_as_the_rows_file_does():
    table = import_script("studies/student_table")
    described = dict(table.rows_of())
    assert described["reference/default"].startswith("the frozen-feature model")
    assert described["ablation/mos"] == "MOS only"
    assert len(described) == 2 + 15
