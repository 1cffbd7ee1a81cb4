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
    assert lines[2].startswith("| the default model") and "| 0.8021 | 0.8094 | 0.894 |" in lines[2]
    assert "| — |" in lines[2]  # no steps.txt: no wall time
    assert lines[3].startswith("| all three") and "0.8123 | 0.8200 | 0.961" in lines[3]
    assert "0.990 / 0.980 / 0.970 / 0.910" in lines[3] and "| 13 min |" in lines[3]  # shared steps not counted,
    # nor a finished row's rerun twice (each step counts once, by its longest line)
    assert (tmp_path / "ablation.md").read_text() == out
