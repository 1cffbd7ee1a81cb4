"""Fault injection: kill -9 a tiny train-rank at random moments, rerun the same command, check.

    python scripts/faults.py --kills 10 [--work-dir runs/faults] [--seed 0]

Each round: one tiny stage-one run (resnet_v2_tiny, 64² crops, the built-in sample photos) is
started, killed with SIGKILL after a random delay (so kills land in steps, checkpoint writes,
evaluations and eval.json writes alike), and started again until it finishes. After each
finished run it checks that
  - the run reached max_steps, and resumed (never restarted) after every kill;
  - eval.json's history has exactly one entry per evaluation step (every eval_every, and the
    last step), none lost, none repeated;
  - no temporary file is left and at most keep_checkpoints checkpoints remain;
  - the final weights equal an uninterrupted run's when the kill fell before the first
    checkpoint, and otherwise are finite: the tf.data iterator's position is not checkpointed, so
    a resumed run draws new batches (deterministic per run, not across a resume).
Prints one line per round and a closing ``N passed, N failed`` line.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

STEPS, EVAL_EVERY, SAVE_EVERY, KEEP = 60, 20, 10, 2


def command(rank_list, train_dir):
    sets = {"net.name": "resnet_v2_tiny", "data.rank_list": rank_list, "data.crop_size": 64,
            "data.references_per_batch": 2, "data.holdout_references": 2, "data.eval_crops": 1,
            "data.eval_crop_size": 64, "optim.optimizer": "adam", "train.margin": 1.0,
            "train.max_steps": STEPS, "train.eval_every": EVAL_EVERY, "train.log_every": 10,
            "train.save_every": SAVE_EVERY, "train.keep_checkpoints": KEEP}
    cmd = [sys.executable, "-m", "rankiqa.cli", "train-rank", "--train-dir", train_dir,
           "--device", "cpu", "--config", "rank_tiny"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd


def weights(train_dir):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(train_dir)
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
            if n.startswith("resnet_v2/") and "/Adam" not in n}


def check(train_dir, killed_before_checkpoint, reference):
    problems = []
    history = [h["step"] for h in json.load(open(os.path.join(train_dir, "eval.json")))["history"]]
    expected = list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    if history != expected:
        problems.append(f"eval.json history steps {history}, expected {expected}")
    left = os.listdir(train_dir)
    stray = [n for n in left if "temp" in n or ".tmp-" in n or ".partial" in n]
    if stray:
        problems.append(f"temporary files left: {stray}")
    checkpoints = [n for n in left if n.startswith("model.ckpt-") and n.endswith(".index")]
    if len(checkpoints) > KEEP or f"model.ckpt-{STEPS}.index" not in checkpoints:
        problems.append(f"checkpoints {sorted(checkpoints)}")
    final = weights(train_dir)
    if not all(np.isfinite(v).all() for v in final.values()):
        problems.append("non-finite weights")
    if killed_before_checkpoint and any(not np.array_equal(final[n], reference[n]) for n in final):
        problems.append("weights differ from the uninterrupted run")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--work-dir", default="runs/faults")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.work_dir, ignore_errors=True)
    os.makedirs(args.work_dir)
    from rankiqa.data import generate, samples

    photos = os.path.join(args.work_dir, "photos")
    samples.write_sample_photos(photos, max_side=128)
    rank_list = generate.make_rank_data(photos, os.path.join(args.work_dir, "data"),
                                        seed=0)["rank_list"]
    reference_dir = os.path.join(args.work_dir, "uninterrupted")
    start = time.time()
    subprocess.run(command(rank_list, reference_dir), check=True, capture_output=True,
                   timeout=900)
    duration = time.time() - start
    reference = weights(reference_dir)
    passed = failed = 0
    for round_ in range(args.kills):
        train_dir = os.path.join(args.work_dir, f"round{round_}")
        proc = subprocess.Popen(command(rank_list, train_dir), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        started = time.time()
        if rng.random() < 0.75:
            # most kills after the first checkpoint, where resuming is what is tested
            while proc.poll() is None and not os.path.exists(os.path.join(train_dir, "checkpoint")):
                time.sleep(0.05)
        delay = rng.uniform(0.0, 0.6 * duration)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        delay = time.time() - started
        before = not any(n.endswith(".index") for n in os.listdir(train_dir)) \
            if os.path.isdir(train_dir) else True
        rerun = subprocess.run(command(rank_list, train_dir), capture_output=True, text=True,
                               timeout=900)
        problems = [] if rerun.returncode == 0 else [f"rerun failed: {rerun.stderr[-500:]}"]
        if not before and "resumed from" not in rerun.stderr:
            problems.append("the rerun did not resume")
        if not problems:
            problems = check(train_dir, before, reference)
        status = "ok" if not problems else "FAILED: " + "; ".join(problems)
        print(f"round {round_}: killed after {delay:.1f} s "
              f"({'before' if before else 'after'} the first checkpoint): {status}", flush=True)
        passed, failed = passed + (not problems), failed + bool(problems)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
