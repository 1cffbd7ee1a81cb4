"""P15 (BENCHMARKS.md): `predict --from-list` at archive scale, with a tiny model so that the
list, not the network, is what is measured.

    python scripts/bench/archive.py [--photos 200000] [--small 2000] [--kills 5]
                                    [--kill-photos 20000] [--work-dir runs/bench_archive]

1. Memory: the peak RSS of scoring --small photos and of --photos photos (GNU time), and their
   ratio: flat memory means a ratio near 1.
2. Kills: --kill-photos photos scored uninterrupted, then the same list killed with SIGKILL
   --kills times, each after a random number of further rows, and resumed (--resume) until done:
   the two files must be equal, row for row.
3. Shards: the same list as 4 shards (--shard K/4) joined by merge-scores must equal the single
   run's file.
Photos are seeded 32x32 PNGs of noise, written once under --work-dir and reused.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image


def rankiqa(*args):
    return [sys.executable, "-m", "rankiqa.cli", *map(str, args)]


def tiny_model(work):
    """A two-step tiny stage-one run (resnet_v2_tiny): the cheapest real model."""
    from rankiqa import config as config_lib
    from rankiqa.data import generate, samples
    from rankiqa.train import rank

    model = os.path.join(work, "model")
    if not os.path.isdir(model):
        photos = os.path.join(work, "sample_photos")
        samples.write_sample_photos(photos, max_side=96)
        ranks = generate.make_rank_data(photos, os.path.join(work, "rank"), seed=0)["rank_list"]
        cfg = config_lib.load(config_lib.RankConfig, "rank_tiny", [
            f"data.rank_list={ranks}", "data.crop_size=32", "data.references_per_batch=2",
            "data.holdout_references=2", "data.eval_crops=1", "data.eval_crop_size=32",
            "train.max_steps=2", "train.eval_every=0", "train.save_every=2"])
        rank.train(cfg, model, device="cpu", log=lambda line: None)
    return model


def photo_list(work, count):
    """A list of `count` seeded 32x32 noise PNGs, 1,000 to a folder (written once)."""
    path = os.path.join(work, f"photos_{count}.txt")
    if os.path.isfile(path):
        return path
    rng = np.random.default_rng(0)
    paths = []
    for k in range(count):
        folder = os.path.join(work, "photos", f"{k // 1000:04d}")
        name = os.path.join(folder, f"{k:07d}.png")
        if not os.path.exists(name):
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(name)
        paths.append(name)
    with open(path + ".tmp", "w") as f:
        f.write("".join(p + "\n" for p in paths))
    os.replace(path + ".tmp", path)
    return path


def peak_rss(command):
    """(wall seconds, peak RSS in MB) of `command`, by GNU time."""
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M", *command], capture_output=True,
                         text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    wall, kb = out.stderr.strip().splitlines()[-1].split()
    return float(wall), int(kb) / 1024


def rows_in(path):
    """Lines in `path` so far (none when it does not exist, or no longer: renamed when done)."""
    try:
        with open(path, "rb") as f:
            lines = f.read().count(b"\n")
    except FileNotFoundError:
        lines = 0
    return lines


def score(model, listing, output, *extra):
    return rankiqa("predict", "--from-list", listing, "--model", model, "--output", output,
                   "--engine", "tensorflow", "--device", "cpu", *extra)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200_000)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--kill-photos", type=int, default=20_000)
    parser.add_argument("--work-dir", default="runs/bench_archive")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = args.work_dir
    os.makedirs(work, exist_ok=True)
    model = tiny_model(work)
    out = os.path.join(work, "out")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        os.remove(os.path.join(out, name))
    result = {}
    # 1. memory: a small list and a large one
    for key, count in (("small", args.small), ("large", args.photos)):
        wall, rss = peak_rss(score(model, photo_list(work, count), os.path.join(out, f"{key}.csv")))
        result[key] = {"photos": count, "seconds": round(wall, 1), "peak_rss_mb": round(rss)}
        print(f"{count} photos: {wall:.0f} s ({count / wall:.0f} photos/s), peak RSS {rss:.0f} MB",
              flush=True)
    result["rss_ratio"] = round(result["large"]["peak_rss_mb"] / result["small"]["peak_rss_mb"], 3)
    # 2. kills: the uninterrupted file, then one killed again and again and resumed
    listing = photo_list(work, args.kill_photos)
    reference = os.path.join(out, "reference.csv")
    subprocess.run(score(model, listing, reference), check=True, capture_output=True)
    killed, rng = os.path.join(out, "killed.csv"), random.Random(args.seed)
    unfinished = killed + ".unfinished"
    kills = 0
    while kills < args.kills:
        # killed once it has written a random number more rows (mid-chunk, mid-batch)
        before = rows_in(unfinished)
        wanted = before + rng.randint(1, max(2, args.kill_photos // (args.kills + 1)))
        proc = subprocess.Popen(score(model, listing, killed, "--resume"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and rows_in(unfinished) < wanted:
            time.sleep(0.05)
        if proc.poll() is not None:
            break  # it finished before the kill
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    subprocess.run(score(model, listing, killed, "--resume"), check=True, capture_output=True)
    same = open(killed, "rb").read() == open(reference, "rb").read()
    result["kills"] = {"photos": args.kill_photos, "killed": kills, "equal": same}
    print(f"{args.kill_photos} photos killed {kills} times and resumed: "
          f"{'equal to' if same else 'DIFFERENT from'} the uninterrupted run's file", flush=True)
    # 3. shards
    shards = []
    for k in range(4):
        shards.append(os.path.join(out, f"shard_{k}.csv"))
        subprocess.run(score(model, listing, shards[-1], "--shard", f"{k}/4"), check=True,
                       capture_output=True)
    merged = os.path.join(out, "merged.csv")
    subprocess.run(rankiqa("merge-scores", *shards, "--from-list", listing, "--output", merged),
                   check=True, capture_output=True)
    merged_same = open(merged, "rb").read() == open(reference, "rb").read()
    result["shards"] = {"count": 4, "equal": merged_same}
    print(f"4 shards merged: {'equal to' if merged_same else 'DIFFERENT from'} the single run's "
          "file", flush=True)
    print(json.dumps({"measure": "p15", **result}))
    sys.exit(0 if same and merged_same else 1)


if __name__ == "__main__":
    main()
