"""Benchmarks (BENCHMARKS.md). Each sub-command prints one JSON line and one readable line.

    python scripts/bench/bench.py p1 --net resnet_v2_tiny --crop 64 --references 4
    python scripts/bench/bench.py p2 --net resnet_v2_tiny --crop 64
    python scripts/bench/bench.py p3
    python scripts/bench/bench.py p4 --net resnet_v2_tiny
    python scripts/bench/bench.py p5
    python scripts/bench/bench.py p6
    python scripts/bench/bench.py p7     # 2 loopback workers / 1, resnet_v2_50 224², 1 thread each
    python scripts/bench/bench.py p8     # mixed / fp32 precision, resnet_v2_50 224²
    python scripts/bench/bench.py cores  # the same CPU-bound work: 2 processes at once / 1
                                         # (are the 2 vCPUs two cores? P7 prints the ceiling
                                         # of its own workload)
    python scripts/bench/bench.py p9 --net efficientnet_lite2   # one backbone at 224²: train,
                                         # predict img/s, peak RSS (one process per backbone)
    python scripts/bench/bench.py p10    # the default model: ONNX Runtime / TensorFlow, auto
    python scripts/bench/bench.py p11    # predict's whole path on 200 photos / the bare network
    python scripts/bench/bench.py p12    # built-in models side by side: photos/s, peak RSS,
                                         # each engine (the ranked student / the default)

Sample data (the photos scikit-image ships and ranking data made from them) is written once under
--work-dir (default runs/bench) and reused.

Timings are medians of --repeats runs after --warmup runs; ratios compare measurements taken in
the same process, because these machines are shared and noisy.
"""

import argparse
import functools
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from rankiqa import losses, nets, siamese
from rankiqa.compat import slim, tf
from rankiqa.run.device import session_config


def median_time(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternate_times(runs, repeats):
    """Median seconds of each ``{name: fn}``, the functions taking turns repeat by repeat, so
    that drift on a shared machine hits every one alike."""
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def p1(args):
    """Ranking pairs per second: one pass over references x levels vs two-branch per pair.

    Default: the same images (references x levels) both ways; the two-branch step then pushes
    5x more images. --equal-batch instead gives the one-pass step 5x the references, so both
    steps push the same number of images and batch-size effects cancel."""
    levels, refs, crop = 6, args.references, args.crop
    pairs = refs * levels * (levels - 1) // 2
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, (refs * levels, crop, crop, 3)).astype(np.float32)
    i, j = losses.pair_indices(levels)
    first = np.concatenate([batch[r * levels + i] for r in range(refs)])
    second = np.concatenate([batch[r * levels + j] for r in range(refs)])
    one_pass_refs = refs * (levels - 1) if args.equal_batch else refs
    one_pass_pairs = one_pass_refs * levels * (levels - 1) // 2
    if args.equal_batch:
        batch = rng.uniform(0, 255, (one_pass_refs * levels, crop, crop, 3)).astype(np.float32)
    network_fn = nets.get_network_fn(args.net)
    steps = {}
    for form in ("one_pass", "two_branch"):
        graph = tf.Graph()
        with graph.as_default():
            sess = tf.Session(graph=graph, config=session_config())
            if form == "one_pass":
                scores, _ = siamese.one_pass_scores(
                    network_fn, network_fn.preprocess(tf.constant(batch)), levels, True)
                loss = losses.rank_hinge_loss(scores, 1.0)
            else:
                s1, s2 = siamese.two_branch_scores(
                    network_fn, network_fn.preprocess(tf.constant(first)),
                    network_fn.preprocess(tf.constant(second)), True)
                loss = tf.reduce_mean(tf.nn.relu(1.0 - (s1 - s2)))
            train_op = slim.learning.create_train_op(loss, tf.train.GradientDescentOptimizer(1e-4))
            sess.run(tf.global_variables_initializer())
            for _ in range(args.warmup):
                sess.run(train_op)
        steps[form] = (sess, train_op)
    times = alternate_times({form: (lambda s=sess, op=op: s.run(op))
                             for form, (sess, op) in steps.items()}, args.repeats)
    results = {}
    for form, (sess, _) in steps.items():
        sess.close()
        seconds = times[form]
        n_pairs = one_pass_pairs if form == "one_pass" else pairs
        n_images = int(batch.shape[0] if form == "one_pass" else 2 * first.shape[0])
        # images/s at each batch size: what explains a ratio below 5 in the default mode
        results[form] = {"step_seconds": seconds, "pairs_per_step": n_pairs,
                         "pairs_per_second": n_pairs / seconds, "images_per_step": n_images,
                         "images_per_second": n_images / seconds}
    ratio = results["one_pass"]["pairs_per_second"] / results["two_branch"]["pairs_per_second"]
    mode = "equal-batch" if args.equal_batch else "same-images"
    out = {"id": "P1", "mode": mode, "net": args.net, "crop": crop, "references": refs,
           "levels": levels, **results, "ratio": ratio, "tf": tf.__version__}
    print(json.dumps(out))
    print(f"P1 {mode} {args.net} {crop}²: one-pass {results['one_pass']['pairs_per_second']:.1f} "
          f"pairs/s ({results['one_pass']['images_per_second']:.1f} img/s), two-branch "
          f"{results['two_branch']['pairs_per_second']:.1f} pairs/s "
          f"({results['two_branch']['images_per_second']:.1f} img/s), ratio {ratio:.2f}x (ideal 5x)")


def sample_rank_list(work_dir, families=("gblur", "wn", "jpeg", "jp2k")):
    """The demo's ranking data under `work_dir` (made once)."""
    from rankiqa.data import generate, samples

    rank_dir = os.path.join(work_dir, "rank_data")
    if not os.path.isfile(os.path.join(rank_dir, "rank_list.csv")):
        photos = samples.write_sample_photos(os.path.join(work_dir, "photos"))
        generate.make_rank_data(os.path.dirname(photos[0]), rank_dir, families, workers=2,
                                force=True)
    return os.path.join(rank_dir, "rank_list.csv")


def p2(args):
    """train-rank images/s from files (decode, crop, batch) / the same step fed from memory."""
    from rankiqa.data import lists, pipeline

    levels, refs, crop = 6, args.references, args.crop
    groups = lists.read_rank_list(sample_rank_list(args.work_dir), levels=levels)
    network_fn = nets.get_network_fn(args.net, weight_decay=1e-4)
    steps, runs = args.steps, {}
    for source in ("memory", "pipeline"):
        graph = tf.Graph()
        with graph.as_default():
            sess = tf.Session(graph=graph, config=session_config())
            dataset = pipeline.rank_dataset(groups, crop, refs, seed=0, cache=not args.no_cache)
            images = tf.data.make_one_shot_iterator(dataset).get_next()
            if source == "memory":
                # one real batch, then the step reads it from a constant: no input work at all
                images = tf.constant(sess.run(images))
            scores, _ = siamese.one_pass_scores(network_fn, network_fn.preprocess(images),
                                                levels, True)
            train_op = slim.learning.create_train_op(losses.rank_hinge_loss(scores, 1.0),
                                                     tf.train.AdamOptimizer(1e-4))
            sess.run(tf.global_variables_initializer())
            # warm-up covers one pass over the data, so the decode cache is full
            for _ in range(max(args.warmup, len(groups) // refs + 1)):
                sess.run(train_op)
        runs[source] = (sess, train_op)
    # the two sources alternate, so drift of a shared machine hits both alike
    times = alternate_times(
        {source: (lambda s=sess, op=op: [s.run(op) for _ in range(steps)])
         for source, (sess, op) in runs.items()}, args.repeats)
    results = {}
    for source, (sess, _) in runs.items():
        sess.close()
        seconds = times[source] / steps
        results[source] = {"step_seconds": seconds, "images_per_second": refs * levels / seconds}
    ratio = results["pipeline"]["images_per_second"] / results["memory"]["images_per_second"]
    out = {"id": "P2", "net": args.net, "crop": crop, "references": refs,
           "cache_decoded": not args.no_cache, **results,
           "ratio": ratio, "tf": tf.__version__}
    print(json.dumps(out))
    print(f"P2 {args.net} {crop}² cache_decoded={not args.no_cache}: pipeline {results['pipeline']['images_per_second']:.0f} img/s, "
          f"memory {results['memory']['images_per_second']:.0f} img/s, ratio {ratio:.3f}")


_BUSY = ("import time, numpy as np; a = np.random.default_rng(0).random((256, 256), np.float32); "
         "t = time.perf_counter(); n = 0\n"
         "while time.perf_counter() - t < {seconds}: a = np.tanh(a @ a * 1e-2); n += 1\n"
         "print(n)")


def cores(args):
    """How much a second process adds on this machine: a fixed-time, CPU-bound loop (a small
    matmul, one thread; plain Python arithmetic too) run in 1 process, then in 2 at once; work
    done by 2 / by 1. 2.0 means two real cores; ~1.0 means the 2 vCPUs share one core's
    throughput, which would cap P3 (2 make-rank-data workers) and P7 (2 training workers);
    memory-bound work can scale less even at 2.0 (P7 measures its own ceiling)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    programs = {"numpy": _BUSY.format(seconds=args.seconds),
                "python": ("import time; t = time.perf_counter(); n = 0; x = 0\n"
                           f"while time.perf_counter() - t < {args.seconds}:\n"
                           "    x = (x * 1103515245 + 12345) % 2147483648; n += 1\n"
                           "print(n)")}
    out = {"id": "cores", "cpus": os.cpu_count(), "seconds": args.seconds, "rows": {}}
    for name, program in programs.items():
        runs = {}
        for count in (1, 2, 1, 2):  # alternating: drift hits both
            procs = [subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE,
                                      text=True, env=env) for _ in range(count)]
            runs.setdefault(count, []).append(sum(int(p.communicate()[0]) for p in procs))
        one, two = statistics.median(runs[1]), statistics.median(runs[2])
        out["rows"][name] = {"work_1": runs[1], "work_2": runs[2], "ratio": two / one}
    print(json.dumps(out))
    for name, row in out["rows"].items():
        print(f"cores ({os.cpu_count()} CPUs): {name} loop, work done by 2 processes at once / "
              f"by 1: {row['ratio']:.2f}x")


def p3(args):
    """`rankiqa make-rank-data` throughput with 2 workers / with 1 (the real command, as a user
    runs it; same photos, same output bytes): the 16 sample photos, or --photos (e.g. the 24
    Kodak photos of ../shared/data/kodak)."""
    from rankiqa.data import samples

    photos = args.photos or os.path.join(args.work_dir, "photos")
    if not os.path.isdir(photos):
        samples.write_sample_photos(photos)
    times = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in (1, 2):
            out = tempfile.mkdtemp(dir=args.work_dir)
            cmd = [sys.executable, "-m", "rankiqa.cli", "make-rank-data", photos,
                   "--output-dir", os.path.join(out, "d"), "--workers", str(workers)]
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[workers].append(time.perf_counter() - start)
            with open(os.path.join(out, "d", "manifest.json")) as f:
                n_images = json.load(f)["images"]
            shutil.rmtree(out)
    t1, t2 = statistics.median(times[1]), statistics.median(times[2])
    out = {"id": "P3", "images": n_images, "seconds_1_worker": t1, "seconds_2_workers": t2,
           "ratio": t1 / t2, "runs": times}
    print(json.dumps(out))
    print(f"P3 make-rank-data {n_images} images: 1 worker {n_images / t1:.1f} img/s, "
          f"2 workers {n_images / t2:.1f} img/s, ratio {t1 / t2:.2f}x")


def p4(args):
    """predict images/s: checkpoint graph, frozen .pb, SavedModel, ONNX Runtime;
    batched (--batch images per run) and one image per run."""
    from rankiqa.serve import scoring
    from rankiqa.tools import export

    work = tempfile.mkdtemp(dir=args.work_dir)
    ckpt_dir = os.path.join(work, "ckpt")
    with tf.Graph().as_default(), tf.Session() as sess:
        scoring.build_scoring_graph(args.net)
        sess.run(tf.global_variables_initializer())
        tf.train.Saver().save(sess, os.path.join(ckpt_dir, "model.ckpt"))
    crop = nets.get_network_fn(args.net).default_image_size if not args.crop else args.crop
    batch = np.random.default_rng(0).uniform(0, 255, (args.batch, crop, crop, 3)).astype(np.float32)
    runners = {}
    scorer = scoring.load_scorer(ckpt_dir, net=args.net, batch_size=args.batch)
    runners["checkpoint"] = scorer.score_batch
    pb = os.path.join(work, "model.pb")
    export.export_pb(ckpt_dir, pb, net=args.net)
    graph_def = tf.GraphDef()
    with open(pb, "rb") as f:
        graph_def.ParseFromString(f.read())
    pb_graph = tf.Graph()
    with pb_graph.as_default():
        tf.import_graph_def(graph_def, name="")
    pb_sess = tf.Session(graph=pb_graph, config=session_config())
    runners["frozen_pb"] = lambda x: pb_sess.run("rankiqa/score:0", {"rankiqa/images:0": x})
    saved = os.path.join(work, "saved")
    export.export_savedmodel(ckpt_dir, saved, net=args.net)
    sm_graph = tf.Graph()
    sm_sess = tf.Session(graph=sm_graph, config=session_config())
    with sm_graph.as_default():
        meta = tf.saved_model.loader.load(sm_sess, ["serve"], saved)
    sig = meta.signature_def["serving_default"]
    sm_in, sm_out = sig.inputs["images"].name, sig.outputs["score"].name
    runners["savedmodel"] = lambda x: sm_sess.run(sm_out, {sm_in: x})
    try:
        import onnxruntime as ort

        onnx_path = os.path.join(work, "model.onnx")
        export.export_onnx(ckpt_dir, onnx_path, net=args.net)
        options = ort.SessionOptions()
        ort_sess = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        runners["onnxruntime"] = lambda x: ort_sess.run(["rankiqa/score:0"],
                                                        {"rankiqa/images:0": x})[0]
    except ImportError:
        pass
    results = {}
    for name, run in runners.items():
        for _ in range(args.warmup):
            run(batch)
        t = alternate_times({"batched": lambda: run(batch),
                             "single": lambda: [run(batch[i:i + 1]) for i in range(len(batch))]},
                            args.repeats)
        batched, single = t["batched"], t["single"]
        results[name] = {"batched_images_per_second": len(batch) / batched,
                         "single_images_per_second": len(batch) / single,
                         "ratio": single / batched}
    shutil.rmtree(work)
    out = {"id": "P4", "net": args.net, "crop": crop, "batch": args.batch, **results,
           "tf": tf.__version__}
    print(json.dumps(out))
    for name, r in results.items():
        print(f"P4 {args.net} {crop}² {name}: batched {r['batched_images_per_second']:.1f} img/s, "
              f"one at a time {r['single_images_per_second']:.1f} img/s, ratio {r['ratio']:.2f}x")


def p5(args):
    """Peak resident memory of a real `rankiqa train-rank` process."""
    rank_list = sample_rank_list(args.work_dir)
    train_dir = tempfile.mkdtemp(dir=args.work_dir)
    cmd = [sys.executable, "-m", "rankiqa.cli", "train-rank", "--train-dir", train_dir,
           "--device", "cpu"]
    for override in (f"net.name={args.net}", f"data.rank_list={rank_list}",
                     f"data.crop_size={args.crop}", f"data.references_per_batch={args.references}",
                     "data.cache_decoded=false", "data.holdout_references=1",
                     "data.eval_crops=1", f"data.eval_crop_size={args.crop}",
                     f"train.max_steps={args.steps}", "train.log_every=1", "train.eval_every=0"):
        cmd += ["--set", override]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    shutil.rmtree(train_dir)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9  # KiB on Linux
    out = {"id": "P5", "net": args.net, "crop": args.crop, "references": args.references,
           "levels": 6, "steps": args.steps, "peak_rss_gb": peak_gb, "seconds": seconds,
           "tf": tf.__version__}
    print(json.dumps(out))
    print(f"P5 train-rank {args.net} {args.references}x6 at {args.crop}², {args.steps} steps: "
          f"peak RSS {peak_gb:.2f} GB ({seconds:.0f} s)")


def loop_operator_loss(scores, margin):
    refs, levels = scores.shape
    values = [max(0.0, margin - sum(scores[r, k] - scores[r, m] for m in range(k + 1, levels)))
              for r in range(refs) for k in range(levels - 1)]
    return sum(values) / len(values)


def loop_pairwise_loss(scores, margin):
    refs, levels = scores.shape
    values = [max(0.0, margin - (scores[r, k] - scores[r, m]))
              for r in range(refs) for k in range(levels) for m in range(k + 1, levels)]
    return sum(values) / len(values)


def p6(args):
    """The two losses against plain loops, and their cost against a training step."""
    rows = []
    for refs in (4, 64):
        scores = np.random.default_rng(refs).normal(size=(refs, 6)).astype(np.float32)
        with tf.Graph().as_default(), tf.Session() as sess:
            s = tf.constant(scores)
            op, pair = losses.rank_hinge_loss(s, 1.0), losses.pairwise_hinge_loss(s, 1.0)
            got_op, got_pair = sess.run([op, pair])
            loss_seconds = median_time(lambda: sess.run(op.op), args.warmup, args.repeats * 5)
        rows.append({"shape": [refs, 6],
                     "operator_abs_diff": float(abs(float(got_op) - loop_operator_loss(scores, 1.0))),
                     "pairwise_abs_diff": float(abs(float(got_pair) - loop_pairwise_loss(scores, 1.0))),
                     "loss_seconds": loss_seconds})
    # the step the loss belongs to: tiny net, 4 references x 6 levels at 64²
    network_fn = nets.get_network_fn("resnet_v2_tiny")
    with tf.Graph().as_default(), tf.Session(config=session_config()) as sess:
        batch = tf.constant(np.random.default_rng(0).uniform(0, 255, (24, 64, 64, 3)),
                            tf.float32)
        scores, _ = siamese.one_pass_scores(network_fn, network_fn.preprocess(batch), 6, True)
        train_op = slim.learning.create_train_op(losses.rank_hinge_loss(scores, 1.0),
                                                 tf.train.GradientDescentOptimizer(1e-4))
        sess.run(tf.global_variables_initializer())
        step_seconds = median_time(lambda: sess.run(train_op), args.warmup, args.repeats)
    for row in rows:
        row["share_of_tiny_step"] = row["loss_seconds"] / step_seconds
    out = {"id": "P6", "rows": rows, "tiny_step_seconds": step_seconds, "tf": tf.__version__}
    print(json.dumps(out))
    for row in rows:
        print(f"P6 {row['shape']}: |operator - loop| {row['operator_abs_diff']:.2e}, "
              f"|pairwise - loop| {row['pairwise_abs_diff']:.2e}, loss {row['loss_seconds']*1e3:.3f} ms "
              f"= {100 * row['share_of_tiny_step']:.2f}% of a tiny-net step "
              f"({step_seconds*1e3:.1f} ms; a resnet_v2_50 step is ~140x longer)")


def train_rank_speed(args, train_dir, extra=(), workers=0, env=None):
    """img/s of a real `rankiqa train-rank` (or `rankiqa launch --workers N -- train-rank`) run:
    the median of its progress lines after the first (start-up, caches filling)."""
    rank_list = sample_rank_list(args.work_dir)
    shutil.rmtree(train_dir, ignore_errors=True)
    command = ["train-rank", "--train-dir", train_dir, "--device", "cpu",
               "--set", f"net.name={args.net}", "--set", f"data.rank_list={rank_list}",
               "--set", f"data.crop_size={args.crop}", "--set", "data.holdout_references=0",
               "--set", f"train.max_steps={args.steps}", "--set", f"train.log_every={args.log_every}",
               "--set", "train.save_every=100000", "--set", "train.eval_every=0",
               "--set", "train.summary_every=0", "--set", "net.batch_norm_decay=0.9", *extra]
    if workers:
        command = ["launch", "--workers", str(workers), "--", *command]
    out = subprocess.run([sys.executable, "-m", "rankiqa", *command], capture_output=True,
                         text=True, env={**os.environ, **(env or {})}, timeout=3600)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    speeds = [float(m) for m in re.findall(r"^(?:\[worker 0\] )?step \d+/\d+ .*? ([\d.]+) img/s\b",
                                          out.stderr, flags=re.M)]
    if len(speeds) < 2:  # the first line is start-up; a changed progress format must not pass
        raise SystemExit(f"train_rank_speed: {len(speeds)} progress lines parsed from "
                         f"`rankiqa {' '.join(command[:3])} ...`; need 2 or more (raise "
                         f"--steps or lower --log-every, or fix the pattern)\n"
                         f"{out.stderr[-2000:]}")
    return statistics.median(speeds[1:]), speeds


def p7(args):
    """train-rank img/s, 2 loopback workers / 1 worker, each of one intra-op thread and the
    same per-worker batch (references x 6 levels)."""
    one_thread = {"TF_NUM_INTRAOP_THREADS": "1"}
    refs = args.references
    one, one_runs = train_rank_speed(args, os.path.join(args.work_dir, "p7_one"),
                                     ["--set", f"data.references_per_batch={refs}"],
                                     env=one_thread)
    two, two_runs = train_rank_speed(args, os.path.join(args.work_dir, "p7_two"),
                                     ["--set", f"data.references_per_batch={2 * refs}"],
                                     workers=2, env=one_thread)
    # the ceiling without any communication: two independent one-worker runs at the same time
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        alone = list(pool.map(lambda k: train_rank_speed(
            args, os.path.join(args.work_dir, f"p7_independent{k}"),
            ["--set", f"data.references_per_batch={refs}"], env=one_thread)[0], (0, 1)))
    out = {"id": "P7", "net": args.net, "crop": args.crop, "references_per_worker": refs,
           "one_worker_img_s": one, "two_workers_img_s": two, "ratio": two / one,
           "two_independent_img_s": alone, "independent_ratio": sum(alone) / one,
           "one_worker_lines": one_runs, "two_worker_lines": two_runs, "tf": tf.__version__}
    print(json.dumps(out))
    print(f"P7 {args.net} {args.crop}², {refs} reference(s) x 6 per worker, 1 thread each: "
          f"1 worker {one:.1f} img/s, 2 workers {two:.1f} img/s: {two / one:.2f}x; two "
          f"independent runs at once (no communication): {alone[0]:.1f} + {alone[1]:.1f} img/s "
          f"= {sum(alone) / one:.2f}x, the machine's ceiling for two processes")


def p8(args):
    """mixed / fp32 img/s: train-rank (the real command and input pipeline) and scoring."""
    from rankiqa.serve import scoring

    refs = args.references
    train = {}
    for precision in ("fp32", "mixed"):
        train[precision], _ = train_rank_speed(
            args, os.path.join(args.work_dir, f"p8_{precision}"),
            ["--set", f"data.references_per_batch={refs}", "--set", f"train.precision={precision}"])
    scorers = {precision: scoring.load_scorer(os.path.join(args.work_dir, "p8_fp32"),
                                              device="cpu", precision=precision)
               for precision in ("fp32", "mixed")}
    crops = np.random.default_rng(0).uniform(0, 255, (args.batch, args.crop, args.crop, 3))
    crops = crops.astype(np.float32)
    for scorer in scorers.values():
        for _ in range(args.warmup):
            scorer.score_batch(crops)
    times = alternate_times({p: (lambda s=s: s.score_batch(crops)) for p, s in scorers.items()},
                            args.repeats)
    score = {p: args.batch / t for p, t in times.items()}
    diff = float(np.abs(scorers["fp32"].score_batch(crops) - scorers["mixed"].score_batch(crops)).max())
    for scorer in scorers.values():
        scorer.close()
    out = {"id": "P8", "net": args.net, "crop": args.crop, "references": refs,
           "train_img_s": train, "train_ratio": train["mixed"] / train["fp32"],
           "score_img_s": score, "score_ratio": score["mixed"] / score["fp32"],
           "score_max_abs_diff": diff, "tf": tf.__version__}
    print(json.dumps(out))
    print(f"P8 {args.net} {args.crop}²: train-rank fp32 {train['fp32']:.1f} img/s, mixed "
          f"{train['mixed']:.1f} img/s: {train['mixed'] / train['fp32']:.2f}x; scoring (batch "
          f"{args.batch}) fp32 {score['fp32']:.1f}, mixed {score['mixed']:.1f} img/s: "
          f"{score['mixed'] / score['fp32']:.2f}x; scores differ by at most {diff:.3g}")


def p9(args):
    """One backbone at --crop²: a whole-network training step (Adam, batch --batch, L2 on
    random targets) and a scoring step (inference, batch --batch), img/s, and this process's
    peak RSS (run one backbone per process)."""
    from rankiqa.serve import scoring

    rng = np.random.default_rng(0)
    crops = rng.uniform(0, 255, (args.batch, args.crop, args.crop, 3)).astype(np.float32)
    targets = rng.uniform(0, 1, args.batch).astype(np.float32)
    network_fn = nets.get_network_fn(args.net)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.float32, [None, args.crop, args.crop, 3])
        score, _ = network_fn(network_fn.preprocess(images), is_training=True)
        loss = losses.l2_loss(score, tf.constant(targets))
        train_op = slim.learning.create_train_op(loss, tf.train.AdamOptimizer(1e-5))
        sess = tf.Session(graph=graph, config=session_config())
        sess.run(tf.global_variables_initializer())
    train = args.batch / median_time(lambda: sess.run(train_op, {images: crops}), args.warmup,
                                     args.repeats)
    sess.close()
    graph = tf.Graph()
    with graph.as_default():
        images, score, _ = scoring.build_scoring_graph(args.net)
        sess = tf.Session(graph=graph, config=session_config())
        sess.run(tf.global_variables_initializer())
    predict = args.batch / median_time(lambda: sess.run(score, {images: crops}), args.warmup,
                                       args.repeats)
    sess.close()
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    parameters = int(sum(np.prod(v.shape.as_list()) for v in graph.get_collection("variables")))
    out = {"id": "P9", "net": args.net, "crop": args.crop, "batch": args.batch,
           "train_img_s": train, "predict_img_s": predict, "peak_rss_gb": peak_gb,
           "parameters": parameters, "tf": tf.__version__}
    print(json.dumps(out))
    print(f"P9 {args.net} {args.crop}² batch {args.batch}: train {train:.1f} img/s, predict "
          f"{predict:.1f} img/s, peak RSS {peak_gb:.2f} GB, {parameters / 1e6:.1f} M parameters")


def p10(args):
    """The default built-in model (`rankiqa predict` with no --model): photos/s, each photo its
    two 224² views, batched (--batch photos per run), with `--engine tensorflow` (the scoring
    graph's session) and `--engine onnx` (ONNX Runtime on the converted graph); the seconds
    each takes to load (the onnx engine converts the graph, or reads its cached conversion), and
    the largest score difference."""
    from rankiqa.serve import engines, scoring
    from rankiqa.weights import builtin

    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(args.batch)]
    out = {"id": "P10", "model": builtin.DEFAULT, "batch": args.batch, "tf": tf.__version__}
    scores = {}
    # an empty conversion cache: the onnx load below converts; the load after it reads the cache
    os.environ[engines.ONNX_CACHE_ENV] = tempfile.mkdtemp(dir=args.work_dir)
    for engine in ("tensorflow", "onnx"):
        start = time.perf_counter()
        with scoring.load_scorer(builtin.DEFAULT, batch_size=2 * args.batch,
                                 engine=engine) as scorer:
            out[f"{engine}_load_s"] = time.perf_counter() - start
            views = scorer.views
            crops = np.concatenate([views.apply(p) for p in photos]).astype(np.float32)
            seconds = median_time(lambda: scorer.score_batch(crops), args.warmup, args.repeats)
            out[f"{engine}_photos_s"] = args.batch / seconds
            scores[engine] = scorer.score_batch(crops)
    start = time.perf_counter()
    with scoring.load_scorer(builtin.DEFAULT, batch_size=2 * args.batch, engine="onnx") as scorer:
        out["onnx_cached_load_s"] = time.perf_counter() - start
        assert scorer.onnx.cached, "the conversion was not cached"
    # predict's default: auto measures both engines once (kept in the cache), then the chosen
    # one runs; loaded twice, so the second load shows the cost with the choice cached
    for load in ("auto_load_s", "auto_cached_load_s"):
        start = time.perf_counter()
        with scoring.load_scorer(builtin.DEFAULT, batch_size=2 * args.batch,
                                 engine="auto") as scorer:
            out[load] = time.perf_counter() - start
            out["auto_choice"] = scorer.model.engine_note
            seconds = median_time(lambda: scorer.score_batch(crops), args.warmup, args.repeats)
            out["auto_photos_s"] = args.batch / seconds
    shutil.rmtree(os.environ.pop(engines.ONNX_CACHE_ENV))
    out["views"] = views.as_dict()
    out["max_score_difference"] = float(np.abs(scores["onnx"] - scores["tensorflow"]).max())
    print(json.dumps(out))
    print(f"P10 {builtin.DEFAULT}, {views.describe()} per photo, {args.batch} photos per run: "
          f"TensorFlow {out['tensorflow_photos_s']:.1f} photos/s (loaded in "
          f"{out['tensorflow_load_s']:.1f} s), ONNX Runtime {out['onnx_photos_s']:.1f} photos/s "
          f"(loaded and converted in {out['onnx_load_s']:.1f} s, from the conversion cache in "
          f"{out['onnx_cached_load_s']:.1f} s): "
          f"{out['onnx_photos_s'] / out['tensorflow_photos_s']:.2f}x; largest score difference "
          f"{out['max_score_difference']:.2g}")
    faster = max(out["tensorflow_photos_s"], out["onnx_photos_s"])
    print(f"P10 --engine auto (predict's default): {out['auto_choice']}; "
          f"{out['auto_photos_s']:.1f} photos/s, {out['auto_photos_s'] / faster:.2f} of the faster "
          f"engine's; loaded in {out['auto_load_s']:.1f} s measuring, "
          f"{out['auto_cached_load_s']:.1f} s with the choice cached")


SHARED_PHOTOS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data",
                             "biq2021-train", "images")


def photo_paths(args):
    """The first --count photos of --photos, else of the shared BIQ2021 training images."""
    folder = args.photos or SHARED_PHOTOS
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.lower().endswith((".jpg", ".jpeg", ".png")))[:args.count]


def p11(args):
    """`rankiqa predict`'s scoring path on real photos (--count of the shared BIQ2021 JPEGs,
    512², or --photos): photos/s through `Scorer.iter_scores` (decode, views and the network,
    overlapped), divided by the same network's bare photos/s on those photos' views decoded
    beforehand, the two taking turns in one process run; for each engine, with the default
    built-in model."""
    from rankiqa.serve import scoring
    from rankiqa.weights import builtin
    from rankiqa.data import images as images_lib

    paths = photo_paths(args)
    out = {"id": "P11", "model": builtin.DEFAULT, "photos": len(paths), "batch": args.batch,
           "decode_threads": scoring.DECODE_THREADS, "tf": tf.__version__}
    for engine in ("tensorflow", "onnx"):
        with scoring.load_scorer(builtin.DEFAULT, batch_size=args.batch, engine=engine) as scorer:
            start = time.perf_counter()
            crops = np.concatenate([scorer.views.apply(images_lib.load_image(p))
                                    for p in paths]).astype(np.float32)
            out[f"{engine}_decode_photos_s"] = len(paths) / (time.perf_counter() - start)
            scores = {"bare": lambda: scorer.run(scorer.score, crops),
                      "predict": lambda: scorer.values(paths)}
            for run in scores.values():
                run()  # warm up
            t = alternate_times(scores, args.repeats)
            bare = scorer.run(scorer.score, crops).reshape(len(paths), -1)
            assert np.array_equal(bare, scorer.values(paths)), "the two paths score differently"
        out[engine] = {"bare_photos_s": len(paths) / t["bare"],
                       "predict_photos_s": len(paths) / t["predict"],
                       "ratio": t["bare"] / t["predict"]}
    out["views"] = scorer.views.as_dict()
    print(json.dumps(out))
    for engine in ("tensorflow", "onnx"):
        r = out[engine]
        print(f"P11 {builtin.DEFAULT} on {len(paths)} photos ({scorer.views.describe()} each), "
              f"{engine}: predict path {r['predict_photos_s']:.1f} photos/s, bare network "
              f"{r['bare_photos_s']:.1f} photos/s on pre-decoded views: {r['ratio']:.2f}; "
              f"decoding alone {out[engine + '_decode_photos_s']:.1f} photos/s on one thread")


def p12(args):
    """Built-in models side by side (--models, comma-separated): photos/s of
    `rankiqa.load_model(NAME, engine=ENGINE).score` on --count of the shared BIQ2021 JPEGs (or
    --photos) for each engine (tensorflow, onnx, auto: what predict uses), each model and
    engine in a process of its own so that each peak RSS is its own; --repeats rounds, the
    models taking turns within each, so that drift on a shared machine hits every one alike.
    ONNX conversions and auto's choice are made once beforehand (a first load converts and
    measures, and peaks higher) in a cache under --work-dir."""
    from rankiqa.serve import engines
    from rankiqa.weights import builtin

    names = args.models.split(",")
    for name in names:
        builtin.get(name)
    env = {**os.environ, engines.ONNX_CACHE_ENV: tempfile.mkdtemp(dir=args.work_dir)}
    one = [sys.executable, __file__, "p12-one", "--count", str(args.count)]
    one += ["--photos", args.photos] if args.photos else []

    def child(name, engine):
        done = subprocess.run(one + ["--models", name, "--engine", engine], env=env, check=True,
                              stdout=subprocess.PIPE, text=True)
        return json.loads(done.stdout.splitlines()[-1])

    for name in names:
        child(name, "auto")  # converts, measures both engines once, caches the choice
    runs = {(name, engine): [] for engine in ("tensorflow", "onnx", "auto") for name in names}
    for _ in range(args.repeats):
        for key in runs:
            runs[key].append(child(*key))
    out = {"id": "P12", "photos": runs[next(iter(runs))][0]["photos"], "repeats": args.repeats,
           "tf": tf.__version__, "models": {}}
    for (name, engine), rs in runs.items():
        out["models"].setdefault(name, {})[engine] = {
            "photos_s": statistics.median(r["photos_s"] for r in rs),
            "peak_rss_gb": max(r["peak_rss_gb"] for r in rs)}
    shutil.rmtree(env[engines.ONNX_CACHE_ENV])
    print(json.dumps(out))
    first = out["models"][names[0]]
    for name in names:
        for engine, r in out["models"][name].items():
            print(f"P12 {name}, {engine}: {r['photos_s']:.1f} photos/s "
                  f"({r['photos_s'] / first[engine]['photos_s']:.2f} of {names[0]}'s), peak RSS "
                  f"{r['peak_rss_gb']:.2f} GB ({r['peak_rss_gb'] / first[engine]['peak_rss_gb']:.2f}"
                  f"), {out['photos']} photos, median of {args.repeats}")


def p12_one(args):
    """One model, one engine (a child of p12): its photos/s and this process's peak RSS."""
    import rankiqa

    paths = photo_paths(args)
    with rankiqa.load_model(args.models, engine=args.engine) as model:
        model.score(paths[:8])  # warm up
        start = time.perf_counter()
        model.score(paths)
        seconds = time.perf_counter() - start
    print(json.dumps({"model": args.models, "engine": args.engine, "photos": len(paths),
                      "photos_s": len(paths) / seconds,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))


def p13(args):
    """int8 against float with the default built-in model, in one process run: `predict`'s
    whole path (`Scorer.values`: decoding, views, network) and the bare network on the same
    views decoded beforehand, photos/s on --count shared BIQ2021 JPEGs (or --photos), for
    `--engine onnx-int8` and `--engine onnx` (the faster float engine on these CPUs, P10), the
    four runs taking turns --repeats times; and the largest score difference."""
    from rankiqa.data import images as images_lib
    from rankiqa.serve import scoring
    from rankiqa.weights import builtin

    paths = photo_paths(args)
    engines = ("onnx", "onnx-int8")
    scorers = {e: scoring.load_scorer(builtin.DEFAULT, batch_size=args.batch, engine=e)
               for e in engines}
    views = scorers["onnx"].views
    crops = np.concatenate([views.apply(images_lib.load_image(p))
                            for p in paths]).astype(np.float32)
    runs = {}
    for engine, scorer in scorers.items():
        runs[f"{engine} predict"] = functools.partial(scorer.values, paths)
        runs[f"{engine} bare"] = functools.partial(scorer.run, scorer.score, crops)
    for run in runs.values():
        run()  # warm up
    t = alternate_times(runs, args.repeats)
    scores = {e: s.values(paths).mean(axis=1) for e, s in scorers.items()}
    out = {"id": "P13", "model": builtin.DEFAULT, "photos": len(paths), "batch": args.batch,
           "repeats": args.repeats, "views": views.as_dict(),
           "int8_engine": scorers["onnx-int8"].model.engine_note,
           "max_score_difference": float(np.abs(scores["onnx-int8"] - scores["onnx"]).max())}
    for engine in engines:
        out[engine] = {"predict_photos_s": len(paths) / t[f"{engine} predict"],
                       "bare_photos_s": len(paths) / t[f"{engine} bare"],
                       "predict_over_bare": t[f"{engine} bare"] / t[f"{engine} predict"]}
    for scorer in scorers.values():
        scorer.close()
    print(json.dumps(out))
    i8, f32 = out["onnx-int8"], out["onnx"]
    print(f"P13 {builtin.DEFAULT} on {len(paths)} photos ({views.describe()} each): predict "
          f"int8 {i8['predict_photos_s']:.1f} photos/s, float ONNX Runtime "
          f"{f32['predict_photos_s']:.1f}: {i8['predict_photos_s'] / f32['predict_photos_s']:.2f}x; "
          f"bare network {i8['bare_photos_s']:.1f} against {f32['bare_photos_s']:.1f}: "
          f"{i8['bare_photos_s'] / f32['bare_photos_s']:.2f}x; predict ÷ bare: int8 "
          f"{i8['predict_over_bare']:.2f}, float {f32['predict_over_bare']:.2f}; largest score "
          f"difference {out['max_score_difference']:.3f}")


COMPETING_LOAD = """
import os, random, sys, time
import numpy as np
os.environ["OMP_NUM_THREADS"] = "1"
rng, a = random.Random(int(sys.argv[1])), np.random.rand(300, 300)
while True:  # busy for 0.2-1.5 s, then idle for 0-0.8 s: a load that comes and goes
    end = time.time() + rng.uniform(0.2, 1.5)
    while time.time() < end:
        a @ a
    time.sleep(rng.uniform(0, 0.8))
"""


def p10_load(args):
    """`--engine auto`'s verdict under a competing load: the default model's two engines
    measured (`engines._measure_engines`, as a first use does) once on a quiet machine, then
    --repeats times with one or two processes of matrix products that come and go beside it;
    how often the verdict names the engine the quiet machine found faster, and how often a
    verdict that would be kept names the other."""
    from rankiqa.serve import engines, scoring
    from rankiqa.weights import builtin

    os.environ[engines.ONNX_CACHE_ENV] = tempfile.mkdtemp(dir=args.work_dir)
    with scoring.load_scorer(builtin.DEFAULT, batch_size=64) as scorer:
        frozen = engines.frozen_graph_def(scorer)

        def faster(record):
            return "onnx" if record["onnx_views_s"] > record["tensorflow_views_s"] else "tensorflow"

        quiet = engines._measure_engines(scorer, frozen)
        trials = []
        for k in range(args.repeats):
            loads = [subprocess.Popen([sys.executable, "-c", COMPETING_LOAD, str(k * 2 + j)])
                     for j in range(1 + k % 2)]
            try:
                record = engines._measure_engines(scorer, frozen)
            finally:
                for load in loads:
                    load.kill()
                    load.wait()
            trials.append({"loads": len(loads), "engine": faster(record),
                           "ratio": record["onnx_views_s"] / record["tensorflow_views_s"],
                           "rounds": record["rounds"], "trusted": record["trusted"]})
    shutil.rmtree(os.environ.pop(engines.ONNX_CACHE_ENV))
    right = sum(t["engine"] == faster(quiet) for t in trials)
    kept_wrong = sum(t["trusted"] and t["engine"] != faster(quiet) for t in trials)
    print(json.dumps({"id": "P10-load", "model": builtin.DEFAULT, "quiet": {
        "engine": faster(quiet), "ratio": quiet["onnx_views_s"] / quiet["tensorflow_views_s"],
        "rounds": quiet["rounds"], "trusted": quiet["trusted"]}, "trials": trials}))
    print(f"P10 under a competing load: quiet, {faster(quiet)} is faster "
          f"({quiet['onnx_views_s'] / quiet['tensorflow_views_s']:.2f}x onnx/tensorflow); "
          f"under load auto named it in {right} of {len(trials)} trials, kept "
          f"{sum(t['trusted'] for t in trials)} verdicts, {kept_wrong} of them wrong")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    defaults = {"p1": dict(crop=64, references=4, repeats=20), "p2": dict(crop=64, references=4, repeats=15),
                "p3": dict(repeats=2), "p4": dict(crop=0, repeats=10),
                "p5": dict(net="resnet_v2_50", crop=224, references=4, steps=3),
                "p6": {}, "cores": {},
                "p7": dict(net="resnet_v2_50", crop=224, references=1, steps=12, log_every=3),
                "p8": dict(net="resnet_v2_50", crop=224, references=2, steps=12, log_every=3,
                           batch=16, repeats=5, warmup=1),
                "p9": dict(net="efficientnet_lite2", crop=224, batch=16, repeats=5, warmup=2),
                "p10": dict(batch=16, repeats=5, warmup=2),
                "p11": dict(batch=64, repeats=3, warmup=0),
                "p12": dict(count=64, repeats=3), "p12-one": dict(count=64),
                "p13": dict(batch=64, repeats=5), "p10-load": dict(repeats=10)}
    for name, fn in (("p1", p1), ("p2", p2), ("p3", p3), ("p4", p4), ("p5", p5), ("p6", p6),
                     ("cores", cores), ("p7", p7), ("p8", p8), ("p9", p9), ("p10", p10),
                     ("p10-load", p10_load), ("p11", p11), ("p12", p12), ("p12-one", p12_one),
                     ("p13", p13)):
        p = sub.add_parser(name, help=fn.__doc__)
        p.add_argument("--warmup", type=int, default=3)
        p.add_argument("--repeats", type=int, default=10)
        p.add_argument("--work-dir", default="runs/bench")
        p.add_argument("--net", default="resnet_v2_tiny")
        p.add_argument("--crop", type=int, default=64)
        p.add_argument("--references", type=int, default=4)
        p.add_argument("--steps", type=int, default=20)
        p.add_argument("--log-every", type=int, default=3, help="p7, p8: progress lines")
        p.add_argument("--batch", type=int, default=32)
        p.add_argument("--equal-batch", action="store_true")
        p.add_argument("--no-cache", action="store_true", help="p2: decode every step")
        p.add_argument("--seconds", type=float, default=5.0, help="cores: length of each run")
        p.add_argument("--count", type=int, default=200, help="p11-p13: photos")
        p.add_argument("--models", default="biq2021-efficientnet-lite2,"
                                            "biq2021-efficientnet-lite2-ranked",
                       help="p12: built-in models, the first the reference")
        p.add_argument("--engine", default="tensorflow", help="p12-one")
        p.add_argument("--photos", help="p3, p11-p13: a folder of photos [default: p3 the "
                                        "sample photos, p11-p13 the shared BIQ2021 "
                                        "training images]")
        p.set_defaults(fn=fn, **defaults[name])
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    args.fn(args)


if __name__ == "__main__":
    main()
