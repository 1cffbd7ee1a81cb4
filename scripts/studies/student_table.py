"""The student's ablation table (docs/recipes.md, "A network trained to rank") from the
folders scripts/studies/biq2021_student_ablation.sh writes: one markdown row per model, with
validation SROCC and PLCC, ladder pair accuracy overall and per family, and wall time.

    python scripts/studies/student_table.py RUN_DIR
"""

import json
import os
import sys

FAMILIES = ("gblur", "wn", "jpeg", "contrast")
# a row's own steps; references, rank data and the teacher are made once and shared by every row
ROW_STEPS = ("train", "head", "evaluate", "ladders")


def rows_of(path=os.path.join(os.path.dirname(os.path.abspath(__file__)), "student_rows.yaml")):
    """((folder under RUN_DIR, what the row is), ...): the reference rows, then the ablation's,
    as scripts/studies/student_rows.yaml lists them."""
    import yaml

    with open(path) as f:
        spec = yaml.safe_load(f)
    return tuple([(f"reference/{name}", ref["what"]) for name, ref in spec["references"].items()]
                 + [(f"ablation/{name}", row["what"]) for name, row in spec["rows"].items()])


def row(run, folder, what):
    base = os.path.join(run, folder)
    with open(os.path.join(base, "eval", "summary.json")) as f:
        e = json.load(f)
    with open(os.path.join(base, "ladders", "ladders.json")) as f:
        lad = json.load(f)
    # each step's longest line: a rerun of a finished row (resuming, re-evaluating) adds lines
    # of its own, and the row's time is that of the run that did the work
    longest = {}
    if os.path.exists(os.path.join(base, "steps.txt")):
        with open(os.path.join(base, "steps.txt")) as f:
            for line in f:
                name = line.split(":")[0].split()[-1]
                if name in ROW_STEPS:
                    longest[name] = max(longest.get(name, 0), int(line.split()[-2]))
    seconds = sum(longest.values())
    families = " / ".join(f"{lad['families'][k]['pair_accuracy']:.3f}" for k in FAMILIES)
    wall = f"{seconds / 60:.0f} min" if seconds else "—"
    return (f"| {what} | {e['srocc']:.4f} | {e['plcc']:.4f} | {lad['pair_accuracy']:.3f} | "
            f"{families} | {wall} |")


def main(run):
    lines = ["| model | validation SROCC | PLCC | ladders | blur / noise / JPEG / contrast | "
             "wall time |", "|---|---|---|---|---|---|"]
    for folder, what in rows_of():
        if os.path.exists(os.path.join(run, folder, "ladders", "ladders.json")):
            lines.append(row(run, folder, what))
    table = "\n".join(lines) + "\n"
    with open(os.path.join(run, "ablation.md"), "w") as f:
        f.write(table)
    print(table, end="")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/studies/student_table.py RUN_DIR")
    main(sys.argv[1])
