"""Is training reproducible on this machine? Runs one `rankiqa finetune` command twice, each
in a fresh process and a fresh folder, and compares the two runs' model weights bit for bit.

    python scripts/dev/rerun_check.py WORK_DIR -- FINETUNE_ARGS...
    python scripts/dev/rerun_check.py runs/rerun -- --config finetune_biq2021_student \
        --set train.max_steps=2 --set train.eval_every=0

Prints how many of the model's variables differ and by how much at most, and writes
WORK_DIR/rerun.json; exits 1 when they differ. `train.deterministic` fixes the batches (ordered
pipelines, per-element seeded crops); what is left is the float arithmetic of TensorFlow's CPU
kernels, which docs/training.md ("Reproducible runs") measures.
"""

import os
import subprocess
import sys

import numpy as np

from rankiqa.run import rundir


def compare(first, second):
    """The comparison of two runs' model weights (no optimizer slots, no step counter):
    variables, how many differ, the largest difference and the variable it is in."""
    from rankiqa.weights.restore import model_arrays

    (_, a), (_, b) = model_arrays(first), model_arrays(second)
    if sorted(a) != sorted(b):
        raise SystemExit(f"{first} and {second} hold different variables: not the same command")
    gaps = {n: float(np.abs(a[n].astype(np.float64) - b[n]).max()) if a[n].size else 0.0
            for n in a}
    worst = max(gaps, key=gaps.get)
    return {"variables": len(a), "differing": sum(g > 0 for g in gaps.values()),
            "max_difference": gaps[worst], "max_in": worst}


def main(argv):
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit(__doc__)
    work_dir, args = argv[0], argv[2:]
    if "--train-dir" in args:
        raise SystemExit("--train-dir is the script's own (WORK_DIR/run_1, WORK_DIR/run_2)")
    runs = [os.path.join(work_dir, f"run_{k}") for k in (1, 2)]
    for run in runs:
        if os.path.exists(run):  # a resumed run draws other batches than a fresh one
            raise SystemExit(f"{run} exists: give a new WORK_DIR (nothing is deleted)")
    for run in runs:
        print(f"rankiqa finetune ... --train-dir {run}", flush=True)
        subprocess.run([sys.executable, "-m", "rankiqa", "finetune", *args, "--train-dir", run],
                       check=True)
    report = {"command": ["rankiqa", "finetune", *args], **compare(*runs)}
    rundir.write_json_atomic(os.path.join(work_dir, "rerun.json"), report)
    same = report["differing"] == 0
    print(f"{'bit-identical' if same else 'not bit-identical'}: {report['differing']} of "
          f"{report['variables']} variables differ, at most {report['max_difference']:.3g} "
          f"({report['max_in']})")
    return int(not same)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
