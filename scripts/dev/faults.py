"""Fault injection: kill -9 a tiny train-rank at random moments, rerun the same command, check.

    python scripts/dev/faults.py --kills 10 [--work-dir runs/faults] [--seed 0]

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
Before the kills it runs the data-loss cases (`data_loss_cases`), each the command a user
could type that once deleted or replaced their files, checking that every file survives:
files named like temporaries in a run folder, an output onto an input photo, ``--force`` over a
checkpoint prefix's folder, a full disk under ``predict --output``, ``evaluate`` over its label
file, ``finetune --init RUN --train-dir RUN``, a rerun under another config, ``suggest-labels
--output`` onto its model, checkpoints without their ``rankiqa.json``; then the resume cases
(`resume_cases`): tied validation labels, a damaged ``eval.json``, a lowered keep_checkpoints.

Prints one line per case and round and a closing ``N passed, N failed`` line.
"""

import argparse
import concurrent.futures
import hashlib
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


# `python -c FULL_DISK ARGS` is `rankiqa ARGS` unable to write more than 200 bytes to a file,
# as on a full disk (SIGXFSZ ignored: the write fails instead of killing the process)
FULL_DISK = ("import resource, runpy, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
             "resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200)); "
             "runpy.run_module('rankiqa.cli', run_name='__main__', alter_sys=True)")


def cli(*args, full_disk=False):
    """`rankiqa ARGS` in a process of its own: (exit status, stderr)."""
    start = ["-c", FULL_DISK] if full_disk else ["-m", "rankiqa.cli"]
    out = subprocess.run([sys.executable, *start, *map(str, args)],
                         capture_output=True, text=True, timeout=900)
    return out.returncode, out.stderr


def run_cases(cases, workers=2):
    """[(case, problem or None)] of `cases` ([(case, thunk)]), in their order: the cases share
    nothing, and each is mostly a process's start (TensorFlow's import), so two run at once."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [(name, pool.submit(thunk)) for name, thunk in cases]
        return [(name, future.result()) for name, future in futures]


def digests(folder):
    """{relative path: SHA-256} of every file under `folder` (what must survive a case)."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def data_loss_cases(work, run, rank_list, photos):
    """[(case, thunk)]: each thunk runs its commands, which must be refused (or succeed)
    leaving every file of the user's as it was, and returns the problem or None. `run` is a
    finished tiny stage-one run; it is copied, not changed."""
    results = []

    def case(name, folder, *commands, refusal=None, watch=None, **kwargs):
        """Adds a case that runs `commands`; each must end in `refusal` (a phrase of its error
        line), or succeed when None, and every file of `folder` (or of `watch`) must be as
        before."""
        def thunk():
            before = {k: v for k, v in digests(folder).items() if watch is None or k in watch}
            ends = [cli(*c, **kwargs) for c in commands]
            after = digests(folder)
            lost = sorted(k for k in before if after.get(k) != before[k])
            wrong = [f"exit {code}: {err.strip().splitlines()[-1:]}" for code, err in ends
                     if (code == 0) != (refusal is None) or (refusal and refusal not in err)]
            return f"changed or lost: {lost[:3]}" if lost else "; ".join(wrong) or None
        results.append((name, thunk))

    def copy(name):
        target = os.path.join(work, "cases", name)
        shutil.copytree(run, target)
        return target

    own = copy("own_files")  # files named like temporaries: a user's own
    os.makedirs(os.path.join(own, "build_temp"))
    os.makedirs(os.path.join(own, "checkpoints_temp"))
    users = ("build_temp/thesis.tex", "meeting_temp", "photo.tmp-2024", "report.partial-x",
             "tempstate_notes.txt", "checkpoints_temp/notes.txt", "model.ckpt_old_temp",
             "eval.json.partial-backup", "rankiqa.json.tmp-2024", "probe.json_temp")
    for name in users:
        with open(os.path.join(own, name), "w") as f:
            f.write("a user's file\n")
    case("training leaves a user's files named like temporaries", own,
         command(rank_list, own)[3:] + ["--set", f"train.max_steps={STEPS + 2}"],
         watch=users)
    victim = os.path.join(work, "cases", "photos")
    shutil.copytree(photos, victim)
    first = os.path.join(victim, sorted(os.listdir(victim))[0])
    case("predict --output never replaces an input photo", victim,
         ["predict", victim, "--model", run, "--output", first, "--force"],
         refusal="is, holds or lies inside the input")
    prefix = copy("prefix")
    case("--force never deletes a run given as a checkpoint prefix", prefix,
         ["merge-ckpt", f"{prefix}/model.ckpt-{STEPS}", "--output-dir", prefix, "--force"],
         ["export-savedmodel", "--model", f"{prefix}/model.ckpt-{STEPS}", "--output-dir", prefix,
          "--force"],
         ["export-pb", "--model", f"{prefix}/model.ckpt-{STEPS}", "--output",
          f"{prefix}/model.ckpt-{STEPS}.index", "--force"],
         refusal="is, holds or lies inside the input")
    scores = os.path.join(work, "cases", "scores")
    os.makedirs(scores)
    with open(os.path.join(scores, "scores.csv"), "w") as f:
        f.write("an earlier, complete output\n")

    case("a full disk under predict --output keeps the old output", scores,
         ["predict", photos, "--model", run, "--output", os.path.join(scores, "scores.csv"),
          "--force"], refusal="the old one, if any, is untouched", full_disk=True)
    labelled = copy("labelled")
    from rankiqa.data import lists, mos

    items = {p: mos.ScoredImage(p, 1.0 - k / 5, 1.0 - k / 5, g.reference, g.distortion)
             for g in lists.read_rank_list(rank_list) for k, p in enumerate(g.paths)}
    labels = os.path.join(labelled, "predictions.csv")
    mos.write_generic_csv(labels, list(items.values()))
    case("evaluate never writes over its label file", labelled,
         ["evaluate", "--model", run, "--set", f"data.label_file={labels}", "--split", "all",
          "--output-dir", labelled, "--force"], refusal="is, holds or lies inside the input")
    same = copy("same")
    case("finetune --init RUN --train-dir RUN is refused", same,
         ["finetune", "--config", "finetune_tiny", "--init", same, "--train-dir", same,
          "--set", f"data.label_file={labels}", "--set", "train.max_steps=2"],
         refusal="lies in --train-dir")
    changed = copy("changed")
    case("a rerun under another config never resumes the old weights", changed,
         command(rank_list, changed)[3:] + ["--set", "train.margin=2.0",
                                            "--set", f"train.max_steps={STEPS + 2}"],
         refusal="was trained with another config (train.margin 1.0 -> 2.0)")
    model = copy("model")
    case("suggest-labels --output --force never replaces the model it reads", model,
         *(["suggest-labels", photos, "--model", model, "--count", "1", "--output",
            os.path.join(model, name), "--force"]
           for name in ("rankiqa.json", f"model.ckpt-{STEPS}.index")),
         refusal="is, holds or lies inside the input")
    bare = copy("bare")
    os.remove(os.path.join(bare, "rankiqa.json"))
    case("checkpoints without their rankiqa.json are never resumed", bare,
         command(rank_list, bare)[3:] + ["--set", f"train.max_steps={STEPS + 2}"],
         ["finetune", "--config", "finetune_tiny", "--train-dir", bare, "--init", run,
          "--set", f"data.label_file={labels}", "--set", "train.max_steps=2"],
         refusal="holds checkpoints but no rankiqa.json")
    return results


def resume_cases(work, run, rank_list):
    """[(case, thunk)] as `data_loss_cases`': reruns that once crashed, resumed the wrong model
    or kept too much: a validation part whose labels all tie, a damaged eval.json, a lowered
    keep_checkpoints."""
    from rankiqa.data import lists, mos

    ties = os.path.join(work, "cases", "ties.csv")
    pristine = {g.paths[0]: g.reference for g in lists.read_rank_list(rank_list)}
    mos.write_generic_csv(ties, [mos.ScoredImage(p, 0.5, 0.5, r) for p, r in pristine.items()])
    tied = os.path.join(work, "cases", "tied")

    def tied_labels():
        ends = [cli("finetune", "--config", "finetune_tiny", "--init", run, "--train-dir", tied,
                    "--set", f"data.label_file={ties}", "--set", "data.batch_size=2",
                    "--set", "data.val_fraction=0.5", "--set", f"train.max_steps={steps}",
                    "--set", "train.eval_every=2", "--set", "train.save_every=2",
                    # 8 validation photos: keep_best must still choose, which once crashed
                    "--set", "train.keep_best_from=2")
                for steps in (4, 6)]
        return None if all(code == 0 and "no evaluation gave a srocc" in err
                           for code, err in ends) else f"{[e[1][-300:] for e in ends]}"

    damaged = os.path.join(work, "cases", "damaged")
    shutil.copytree(run, damaged)
    with open(os.path.join(damaged, "eval.json"), "w") as f:
        f.write('{"history": [')

    def damaged_eval_json():
        code, err = cli(*command(rank_list, damaged)[3:], "--set", f"train.max_steps={STEPS + 2}")
        return None if code == 1 and "eval.json is damaged" in err else err[-300:]

    fewer = os.path.join(work, "cases", "fewer")
    shutil.copytree(run, fewer)

    def lowered_keep():
        code, _ = cli(*command(rank_list, fewer)[3:], "--set", "train.keep_checkpoints=1",
                      "--set", f"train.max_steps={STEPS + SAVE_EVERY}")
        left = [n for n in os.listdir(fewer) if n.endswith(".index")]
        return (None if code == 0 and left == [f"model.ckpt-{STEPS + SAVE_EVERY}.index"]
                else f"exit {code}, checkpoints {sorted(left)}")

    return [("tied validation labels finish the run and its rerun", tied_labels),
            ("a damaged eval.json is one error naming it", damaged_eval_json),
            ("a lowered keep_checkpoints prunes at the resume", lowered_keep)]


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
    for name, problem in run_cases(data_loss_cases(args.work_dir, reference_dir, rank_list, photos)
                                   + resume_cases(args.work_dir, reference_dir, rank_list)):
        print(f"case: {name}: {'ok' if problem is None else 'FAILED: ' + problem}", flush=True)
        passed, failed = passed + (problem is None), failed + (problem is not None)
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
