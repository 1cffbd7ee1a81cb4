"""Benchmarks (issue 5). Each sub-command prints one JSON line and one readable line.

    python scripts/bench/bench.py p1 --net resnet_v2_tiny --crop 64 --references 4
    python scripts/bench/bench.py p6

Timings are medians of --repeats runs after --warmup runs; ratios compare measurements taken in
the same process, because these machines are shared and noisy.
"""

import argparse
import json
import statistics
import time

import numpy as np

from rankiqa import losses, nets, siamese
from rankiqa.compat import slim, tf
from rankiqa.train.loop import session_config


def median_time(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def p1(args):
    """Ranking pairs per second: one pass over references x levels vs two-branch per pair."""
    levels, refs, crop = 6, args.references, args.crop
    pairs = refs * levels * (levels - 1) // 2
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, (refs * levels, crop, crop, 3)).astype(np.float32)
    i, j = losses.pair_indices(levels)
    first = np.concatenate([batch[r * levels + i] for r in range(refs)])
    second = np.concatenate([batch[r * levels + j] for r in range(refs)])
    network_fn = nets.get_network_fn(args.net)
    results = {}
    for form in ("one_pass", "two_branch"):
        with tf.Graph().as_default(), tf.Session(config=session_config()) as sess:
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
            seconds = median_time(lambda: sess.run(train_op), args.warmup, args.repeats)
            results[form] = {"step_seconds": seconds, "pairs_per_second": pairs / seconds,
                             "images_per_step": int(batch.shape[0] if form == "one_pass"
                                                    else 2 * first.shape[0])}
    ratio = results["one_pass"]["pairs_per_second"] / results["two_branch"]["pairs_per_second"]
    out = {"id": "P1", "net": args.net, "crop": crop, "references": refs, "levels": levels,
           "pairs_per_step": pairs, **results, "ratio": ratio, "tf": tf.__version__}
    print(json.dumps(out))
    print(f"P1 {args.net} {crop}²: one-pass {results['one_pass']['pairs_per_second']:.0f} "
          f"pairs/s, two-branch {results['two_branch']['pairs_per_second']:.0f} pairs/s, "
          f"ratio {ratio:.2f}x (ideal 5x)")


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
              f"({step_seconds*1e3:.1f} ms; a resnet_v2_50 step is ~100x longer)")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("p1", p1), ("p6", p6)):
        p = sub.add_parser(name, help=fn.__doc__)
        p.add_argument("--warmup", type=int, default=3)
        p.add_argument("--repeats", type=int, default=10)
        p.set_defaults(fn=fn)
        if name == "p1":
            p.add_argument("--net", default="resnet_v2_tiny")
            p.add_argument("--crop", type=int, default=64)
            p.add_argument("--references", type=int, default=4)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
