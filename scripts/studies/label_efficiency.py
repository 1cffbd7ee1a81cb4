"""The label-efficiency study on saved frozen features (scripts/studies/label_efficiency.sh makes them):
validation SROCC, PLCC and ladder pair accuracy of heads fitted on N labelled photos, mean ± sd
over seeded draws, for each method:

  MOS only         ridge on the N photos' features (rankiqa.train.probe.fit_ridge: alpha by
                   cross-validated SROCC among the N);
  MOS + ranking    the ranking-aware probe (probe.fit_ranked) at each weight of --weights, its
                   rank groups the unlabelled photos' synthetic ladders (no MOS of theirs);
                   "best weight" is the weight with the highest mean validation SROCC at that N,
                   "the rule's weight" probe.weight_for_labels(N), what finetune uses with
                   probe.rank_rule: labels;
  ranking only     N = 0: the squared hinge alone on the unlabelled ladders (no opinion score).

With --active, the simulation of `rankiqa suggest-labels` instead: from 25 labelled photos,
25 more per round chosen by each strategy of rankiqa.serve.active (the head refitted by ridge each
round; a photo's uncertainty is the spread of that head's score across its views), up to 400;
validation SROCC after each round, mean ± sd over seeds, and the labels each strategy needs to
reach random choice's SROCC at 400.

Features are standardised and projected on their first --components principal components
(fitted on the unlabelled photos' and the training part's features, no score used), not
whitened: ridge on them is ridge on the standardised features within that subspace, which
makes the thousands of fits of the study take minutes (the table's last row is the full-data
figure of the same projection, beside biq2021-efficientnet-lite2's 0.8021 on every feature).

  python scripts/studies/label_efficiency.py FEATURES_DIR --unlabelled UNLABELLED.txt [--plot OUT.png]
  python scripts/studies/label_efficiency.py FEATURES_DIR --unlabelled UNLABELLED.txt --active \
      [--seeds 5] [--plot OUT.png]
"""

import argparse
import os
import sys
import time

import numpy as np

from rankiqa import metrics
from rankiqa.serve import active
from rankiqa.errors import InputError
from rankiqa.train import probe

ALPHAS = (1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6)
SIZES = (25, 50, 100, 200, 400, 800, 1600, None)  # None: every labelled photo
MARGIN = 0.05  # the recipes' (signals.rank_margin): score units of normalised MOS


def load(directory, name):
    with np.load(os.path.join(directory, name + ".npz")) as data:
        return {k: data[k] for k in data.files}


def project(parts, components):
    """Each part's standardised features ``[..., d]`` on the first `components` principal
    components of the training and rank-group features (no scores used), not whitened: the
    components keep their spread, as ridge on the standardised features sees it."""
    pool = np.concatenate([parts["train"]["features"].reshape(-1, parts["train"]["features"]
                                                              .shape[-1]),
                           parts["rank"]["features"].reshape(-1, parts["rank"]["features"]
                                                             .shape[-1])]).astype(np.float64)
    mean, std = pool.mean(0), pool.std(0) + 1e-8
    _, _, vt = np.linalg.svd((pool - mean) / std, full_matrices=False)
    basis = vt[:components].T
    return {name: {**part, "features": ((part["features"] - mean) / std) @ basis}
            for name, part in parts.items()}


def scores_of(fit, features):
    """Mean over the views (``[..., views, d]``) of the head's score."""
    return (((features - fit["mean"]) / fit["std"]) @ fit["weights"]).mean(-1) + fit["bias"]


def measure(fit, val, ladder):
    summary = metrics.summary(scores_of(fit, val["features"]), val["scores"])
    return (summary["srocc"], summary["plcc"],
            float(np.mean([metrics.pair_accuracy(s) for s in scores_of(fit, ladder["features"])])))


def fit_mos(x, y, standardise=True):
    """Ridge on ``[n, views, d]`` features (one row per view), alpha by 5-fold CV SROCC."""
    n, v, d = x.shape
    return probe.fit_ridge(x.reshape(n * v, d), np.repeat(y, v), ALPHAS,
                           groups=np.repeat(np.arange(n), v), standardise=standardise)


def fit_ranking_only(groups, alpha, weight=1.0):
    """The squared hinge alone on the rank groups' pairs plus the ridge penalty: no opinion score.
    On the projection (centred), with the same Newton steps as `probe.fit_ranked`; its scale is
    arbitrary, which SROCC and pair accuracy ignore."""
    d = probe.ranking_pairs(groups)
    w, active = np.zeros(d.shape[1]), None
    for _ in range(50):
        now = d @ w < MARGIN
        if active is not None and np.array_equal(now, active):
            break
        active = now
        w = np.linalg.solve(weight * d[active].T @ d[active] + alpha * np.eye(d.shape[1]),
                            weight * MARGIN * d[active].sum(0))
    dim = d.shape[1]
    return {"mean": np.zeros(dim), "std": np.ones(dim), "weights": w, "bias": 0.0}


def study(parts, unlabelled, draws, weights, log):
    train, val, ladder, rank = parts["train"], parts["val"], parts["ladders"], parts["rank"]
    pool = np.array([os.path.realpath(p) not in unlabelled for p in train["paths"]])
    if pool.all():
        raise InputError("none of the unlabelled photos is among the training features: "
                         "--unlabelled must list the photos the rank groups were made from")
    labelled = np.flatnonzero(pool)
    groups = rank["features"].mean(2)  # [groups, levels, d]: the mean over views
    rows = {}  # (method, N) -> [(srocc, plcc, ladders)] over draws

    for alpha in (1e2, 1e3, 1e4, 1e5):  # N = 0: no score to choose alpha by; each reported
        rows[(f"ranking only (alpha {alpha:g})", 0)] = [
            measure(fit_ranking_only(groups, alpha), val, ladder)]
    for size in [s for s in SIZES if s is None or s < len(labelled)]:  # None: every photo
        n = len(labelled) if size is None else size
        count = 1 if size is None else (draws if n <= 800 else max(2, draws // 2))
        start = time.time()
        for seed in range(count):
            chosen = np.random.default_rng(seed).permutation(labelled)[:n]
            x, y = train["features"][chosen], train["scores"][chosen]
            fit = fit_mos(x, y, standardise=False)  # the projection keeps the features' scale
            rows.setdefault(("MOS only", n), []).append(measure(fit, val, ladder))
            flat = x.reshape(-1, x.shape[-1])
            rule = probe.weight_for_labels(n)  # probe.rank_rule: labels
            ranked = probe.fit_ranked(flat, np.repeat(y, x.shape[1]), groups, fit, rule, MARGIN)
            rows.setdefault(("MOS + ranking, the rule's weight", n), []).append(
                measure(ranked, val, ladder))
            for weight in weights:
                ranked = probe.fit_ranked(flat, np.repeat(y, x.shape[1]), groups, fit, weight,
                                          MARGIN)
                rows.setdefault((f"MOS + ranking, weight {weight:g}", n), []).append(
                    measure(ranked, val, ladder))
        log(f"N={n}: {count} draws in {time.time() - start:.0f} s")
    return rows


def best_weight_rows(rows, weights, sizes):
    """Per N, the ranking weight with the highest mean validation SROCC."""
    best = {}
    for n in sizes:
        candidates = [(np.mean([r[0] for r in rows[(f"MOS + ranking, weight {w:g}", n)]]), w)
                      for w in weights]
        best[n] = max(candidates)[1]
    return best


def table(rows, weights):
    sizes = sorted({n for _, n in rows if n})
    best = best_weight_rows(rows, weights, sizes)

    def cell(results, k):
        values = np.array([r[k] for r in results])
        return f"{values.mean():.3f} ± {values.std():.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    lines = ["| N | method | draws | val SROCC | val PLCC | ladder pair accuracy |",
             "|---|---|---|---|---|---|"]
    for (method, n), results in rows.items():
        if n == 0:
            lines.append(f"| 0 | {method} | 1 | {cell(results, 0)} | {cell(results, 1)} | "
                         f"{cell(results, 2)} |")
    for n in sizes:
        for method in ("MOS only", "MOS + ranking, the rule's weight",
                       f"MOS + ranking, weight {best[n]:g}"):
            results = rows[(method, n)]
            label = (f"{method} ({probe.weight_for_labels(n):.3g})" if "rule" in method else
                     method if method == "MOS only" else f"{method} (best of {len(weights)})")
            lines.append(f"| {n} | {label} | {len(results)} | {cell(results, 0)} | "
                         f"{cell(results, 1)} | {cell(results, 2)} |")
    lines += ["", "Every weight (mean validation SROCC / ladder pair accuracy):", "",
              "| N | " + " | ".join(f"weight {w:g}" for w in weights) + " |",
              "|---|" + "---|" * len(weights)]
    for n in sizes:
        cells = []
        for w in weights:
            results = rows[(f"MOS + ranking, weight {w:g}", n)]
            cells.append(f"{np.mean([r[0] for r in results]):.3f} / "
                         f"{np.mean([r[2] for r in results]):.3f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines), best


def plot(rows, best, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    sizes = sorted(best)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, colour in (("MOS only", "tab:blue"), ("MOS + ranking", "tab:orange")):
        for k, axis in ((0, axes[0]), (2, axes[1])):
            keys = [("MOS only", n) if method == "MOS only" else
                    (f"MOS + ranking, weight {best[n]:g}", n) for n in sizes]
            mean = np.array([np.mean([r[k] for r in rows[key]]) for key in keys])
            sd = np.array([np.std([r[k] for r in rows[key]]) for key in keys])
            axis.errorbar(sizes, mean, yerr=sd, label=method, color=colour, marker="o",
                          capsize=3)
    zero = [key for key in rows if key[1] == 0]
    if zero:
        top = max(zero, key=lambda key: rows[key][0][0])
        axes[0].axhline(rows[top][0][0], color="grey", linestyle=":",
                        label=f"{top[0]}, N = 0")
        axes[1].axhline(rows[top][0][2], color="grey", linestyle=":")
    for axis, title in ((axes[0], "validation SROCC (600 BIQ2021 photos)"),
                        (axes[1], "ladder pair accuracy (20 photos x 4 families)")):
        axis.set_xscale("log")
        axis.set_xlabel("labelled photos N")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def simulate(parts, unlabelled, seeds, log, strategies=active.STRATEGIES, start=25, step=25,
             stop=400):
    """{strategy: {N: [validation SROCC per seed]}} of the active-labelling simulation."""
    train, val = parts["train"], parts["val"]
    pool = np.flatnonzero([os.path.realpath(p) not in unlabelled for p in train["paths"]])
    x, y = train["features"][pool], train["scores"][pool]  # [n, views, d]
    centre = x.mean(1)  # a photo's features: the mean over its views
    out = {strategy: {} for strategy in strategies}
    for seed in range(seeds):
        begin = time.time()
        initial = list(np.random.default_rng(seed).permutation(len(pool))[:start])
        for strategy in strategies:
            chosen = list(initial)
            while True:
                fit = fit_mos(x[chosen], y[chosen])
                srocc = metrics.srocc(scores_of(fit, val["features"]), val["scores"])
                out[strategy].setdefault(len(chosen), []).append(srocc)
                if len(chosen) >= stop:
                    break
                rest = np.setdiff1d(np.arange(len(pool)), chosen)
                per_view = ((x[rest] - fit["mean"]) / fit["std"]) @ fit["weights"]
                picks = active.choose(strategy, step, len(rest), features=centre[rest],
                                      labelled=centre[chosen], spread=per_view.std(1),
                                      seed=seed * 1000 + len(chosen))
                chosen += [int(rest[k]) for k, _ in picks]
        log(f"seed {seed}: {time.time() - begin:.0f} s")
    return out


def active_table(out):
    sizes = sorted(out["random"])
    target = np.mean(out["random"][sizes[-1]])
    lines = ["| strategy | " + " | ".join(f"N = {n}" for n in sizes if n in (25, 50, 100, 200,
                                                                                 300, 400))
             + f" | labels to reach random's SROCC at {sizes[-1]} ({target:.4f}) |",
             "|---|" + "---|" * (len([n for n in sizes if n in (25, 50, 100, 200, 300, 400)]) + 1)]
    for strategy, by_size in out.items():
        reached = [n for n in sizes if np.mean(by_size[n]) >= target]
        cells = [f"{np.mean(by_size[n]):.4f} ± {np.std(by_size[n]):.4f}" for n in sizes
                 if n in (25, 50, 100, 200, 300, 400)]
        lines.append(f"| {strategy} | " + " | ".join(cells) +
                     f" | {reached[0] if reached else f'not within {sizes[-1]}'} |")
    return "\n".join(lines)


def plot_active(out, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 4))
    for strategy, by_size in out.items():
        sizes = sorted(by_size)
        mean = np.array([np.mean(by_size[n]) for n in sizes])
        sd = np.array([np.std(by_size[n]) for n in sizes])
        axis.plot(sizes, mean, marker=".", label=strategy)
        axis.fill_between(sizes, mean - sd, mean + sd, alpha=0.15)
    axis.set_xlabel("labelled photos")
    axis.set_ylabel("validation SROCC (600 BIQ2021 photos)")
    axis.grid(alpha=0.3)
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features_dir")
    parser.add_argument("--unlabelled", required=True,
                        help="the list of photos the rank groups were made from")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--weights", default="0.1,0.3,1,3,10,30")
    parser.add_argument("--components", type=int, default=1024)
    parser.add_argument("--plot", help="write the SROCC and ladder plot here (PNG)")
    parser.add_argument("--active", action="store_true",
                        help="the active-labelling simulation instead of the N study")
    parser.add_argument("--seeds", type=int, default=5, help="--active: starting draws")
    parser.add_argument("--strategies", default=",".join(active.STRATEGIES),
                        help="--active: the strategies to simulate (random among them)")
    args = parser.parse_args(argv)
    parts = {name: load(args.features_dir, name) for name in ("train", "val", "ladders", "rank")}
    with open(args.unlabelled, encoding="utf-8") as f:
        unlabelled = {os.path.realpath(line.strip()) for line in f if line.strip()}
    weights = [float(w) for w in args.weights.split(",")]
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.active:
        out = simulate(parts, unlabelled, args.seeds, log,  # the features suggest-labels sees
                       args.strategies.split(","))
        print(active_table(out))
        if args.plot:
            plot_active(out, args.plot)
            log(f"wrote {args.plot}")
        return os.EX_OK
    rows = study(project(parts, args.components), unlabelled, args.draws, weights, log)
    text, best = table(rows, weights)
    print(text)
    if args.plot:
        plot(rows, best, args.plot)
        log(f"wrote {args.plot}")
    return os.EX_OK


if __name__ == "__main__":
    sys.exit(main())
