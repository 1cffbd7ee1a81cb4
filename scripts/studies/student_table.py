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
# (folder under RUN_DIR, what the row is)
ROWS = (("reference/default", "the default model (`biq2021-efficientnet-lite2`), the start"),
        ("reference/teacher", "the teacher (`biq2021-efficientnet-dinov2`), 3 views, 11x the cost"),
        ("ablation/mos", "MOS only"),
        ("ablation/mos_teacher", "MOS + teacher"),
        ("ablation/mos_rank", "MOS + ranking"),
        ("ablation/all", "all three"),
        ("ablation/all_weighted", "all three, teacher weight 4, ranking weight 0.1"),
        ("ablation/whole", "the same, the whole network trained"),
        ("ablation/whole_pass", "the whole network, 1,600 steps (one pass over the teacher's "
         "views); head refitted, then 1,600 steps of MOS alone under it"),
        ("ablation/whole_rank_teacher",
         "the whole network, the teacher also scoring the rank data's 8,424 images"),
        ("ablation/whole_own_views", "the whole network, the teacher's 3 own views of each photo "
         "alone"),
        ("ablation/whole_bn_batch", "the whole network, batch norm on batch statistics"),
        ("ablation/whole_bn_moving", "the same, the rank images on the moving statistics"),
        ("ablation/whole_pass_bn_batch", "the recipe, batch norm on batch statistics"),
        ("ablation/whole_pass_bn_moving", "the same, the rank images on the moving statistics"),
        ("ablation/whole_pass_mos3200",
         "the recipe's trained network, head refitted, then 3,200 steps of MOS alone"),
        ("ablation/whole_bn_moving_mos1600", "the whole network, batch norm on batch "
         "statistics, the rank images on the moving ones, 400 steps; head refitted, then 1,600 "
         "steps of MOS alone under it"))


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
    for folder, what in ROWS:
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
