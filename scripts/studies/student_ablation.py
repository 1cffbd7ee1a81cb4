"""The student's ablation (docs/recipes.md, "A network trained to rank"): every row of
scripts/studies/student_rows.yaml run as the recipe of scripts/recipes/biq2021_student.sh with
the row's overrides, on one teacher and one rank data (RUN_DIR/teach, RUN_DIR/rank_data); then
the two reference rows and the table of every row (scripts/studies/student_table.py).

    python scripts/studies/student_ablation.py [RUN_DIR] [ROW ...]   (default: every row)

A row whose RUN_DIR/ablation/ROW/eval/summary.json exists is done and skipped; an unfinished
row resumes where it stopped (each step of the recipe resumes). Needs ../shared/data; the rows'
times are in the file (4 to 11 hours each for whole_pass*, 15-35 min for the others, on 2 cores).
"""

import csv
import glob
import os
import shutil
import subprocess
import sys
import time

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
ROWS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "student_rows.yaml")
CONFIG = "configs/finetune_biq2021_student.yaml"
TEACHER = "biq2021-efficientnet-dinov2"


def load_rows(path=ROWS_FILE):
    """``(groups, rows, references)`` of the rows file, every row's overrides checked to name
    known groups or be ``key=value``, every reused row to exist."""
    with open(path) as f:
        spec = yaml.safe_load(f)
    groups, rows = spec["groups"], spec["rows"]
    for name, row in rows.items():
        for entry in row["set"]:
            if entry not in groups and "=" not in entry:
                raise SystemExit(f"{path}: row {name}: {entry!r} is neither a group nor key=value")
        if row.get("reuse") and row["reuse"] not in rows:
            raise SystemExit(f"{path}: row {name} reuses {row['reuse']!r}, which is no row")
    return groups, rows, spec["references"]


def overrides(row, groups, run):
    """The row's ``--set`` arguments, groups expanded in order, ``{run}`` filled in."""
    values = [v for entry in row["set"] for v in (groups.get(entry) or [entry])]
    return [a for v in values for a in ("--set", v.replace("{run}", run))]


def command(name, row, groups, run):
    """``(environment additions, argv)`` of the row's recipe run."""
    env = {"TEACH_DIR": run, "MOS_STEPS": str(row.get("mos_steps", 0))}
    argv = ["bash", "scripts/recipes/biq2021_student.sh", os.path.join(run, "ablation", name)]
    return env, argv + overrides(row, groups, run)


def done(run, name):
    return os.path.isfile(os.path.join(run, "ablation", name, "eval", "summary.json"))


def run_row(name, row, groups, run):
    if row.get("reuse"):  # step 4 then finds the reused row's network trained
        if not done(run, row["reuse"]):
            sys.exit(f"row {name} reuses row {row['reuse']}'s trained network: run "
                     f"{row['reuse']} first")
        os.makedirs(os.path.join(run, "ablation", name), exist_ok=True)
        link = os.path.join(run, "ablation", name, "train")
        if not os.path.lexists(link):
            os.symlink(os.path.join("..", row["reuse"], "train"), link)
    if done(run, name):
        return
    env, argv = command(name, row, groups, run)
    subprocess.run(argv, env={**os.environ, **env}, check=True)


def teach_rank(run):
    """The recipe's teach step with --rank-list, into RUN/teach_rank: the photos' features
    (40 min) are the recipe's, linked rather than computed again, so only the rank images'
    are new (~30 min alone)."""
    out = os.path.join(run, "teach_rank")
    if os.path.isfile(os.path.join(out, "teacher.csv")):
        return
    os.makedirs(os.path.join(out, "features"), exist_ok=True)
    for shard in glob.glob(os.path.join(run, "teach", "features", "photos-*.npy")):
        target = os.path.join(out, "features", os.path.basename(shard))
        if not os.path.exists(target):
            os.link(shard, target)
    if not os.path.exists(os.path.join(out, "plan.json")):
        shutil.copy(os.path.join(run, "teach", "plan.json"), out)
    start = time.monotonic()
    subprocess.run(["rankiqa", "teach", "--config", CONFIG, "--model", TEACHER,
                    "--output-dir", out, "--exclude", os.path.join(run, "ladder_photos.txt"),
                    "--extra-views", "2", "--alpha", "10000",
                    "--rank-list", os.path.join(run, "rank_data", "rank_list.csv")], check=True)
    line = f"step teach-rank: {time.monotonic() - start:.0f} s"
    print(line)
    with open(os.path.join(out, "steps.txt"), "a") as f:
        f.write(line + "\n")


def own_views_table(run):
    """The teacher's table without its 2 random views a photo: its 3 own pyramid views alone."""
    source = os.path.join(run, "teach", "teacher.csv")
    target = os.path.join(run, "teach", "teacher_own_views.csv")
    if os.path.isfile(target):
        return
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(target + ".tmp", "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(row for row in rows if int(row["view"]) < 3)
    os.replace(target + ".tmp", target)


def reference_rows(references, run):
    for name, ref in references.items():
        out = os.path.join(run, "reference", name)
        if not os.path.isfile(os.path.join(out, "eval", "summary.json")):
            subprocess.run(["rankiqa", "evaluate", "--model", ref["model"], "--config", CONFIG,
                            "--crops", str(ref["views"]), "--output-dir",
                            os.path.join(out, "eval"), "--force"], check=True)
        if not os.path.isfile(os.path.join(out, "ladders", "ladders.json")):
            subprocess.run(["rankiqa", "ladders", os.path.join(run, "ladder_photos.txt"),
                            "--model", ref["model"], "--output-dir",
                            os.path.join(out, "ladders")], check=True)


def main(argv):
    os.chdir(ROOT)
    run = argv[0] if argv else "runs/biq2021_student"
    groups, rows, references = load_rows()
    chosen = argv[1:] or list(rows)
    unknown = [r for r in chosen if r not in rows]
    if unknown:
        sys.exit(f"unknown row {unknown[0]}; choose from {', '.join(rows)}")
    # references, rank data and the teacher, before the rows that read them
    subprocess.run(["bash", "scripts/recipes/biq2021_student_data.sh", run], check=True)
    if "whole_rank_teacher" in chosen:
        teach_rank(run)
    if "whole_own_views" in chosen:
        own_views_table(run)
    for name in chosen:
        run_row(name, rows[name], groups, run)
    reference_rows(references, run)
    subprocess.run([sys.executable, "scripts/studies/student_table.py", run], check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
