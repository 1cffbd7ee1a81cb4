"""The leave-one-kind-out study on saved frozen features (scripts/studies/leave_one_kind_out.sh
makes them): each kind of BIQ2021 photo in turn is "the user's own"; a source head is fitted on
the other two kinds' training photos (biq2021-efficientnet-lite2's recipe: ridge on frozen
EfficientNet-Lite2 features, alpha by 5-fold cross-validated SROCC); then N of the kind's labels
(seeded draws) adapt it, arm by arm, and each result is measured within the kind on the
validation part's photos of that kind (which nothing is fitted on):

  zero-shot        the source as it is (N = 0);
  calibrate        its score mapped linearly onto the N labels   (rankiqa.train.adapt)
  centred          + its head moved toward them, ridge-centred on it (adapt)
  fresh            a fresh ridge head on the N labels, the few-label path before (adapt)
  fresh + ranking  that head with the ranking hinge on the kind's unlabelled photos' synthetic
                   ladders (rankiqa.train.probe.fit_ranked at probe.weight_for_labels(N))
  chosen           what `rankiqa calibrate --head auto` picks by 3 x 5-fold cross-validation
                   over the N labels (the arm it picked is counted)

A photo is the mean of its views' features (the head is linear, so this is the model's score).

  python scripts/studies/leave_one_kind_out.py FEATURES_DIR --unlabelled UNLABELLED.txt \
      [--plot OUT.png] [--json OUT.json]
  python scripts/studies/leave_one_kind_out.py FEATURES_DIR --unlabelled UNLABELLED.txt \
      --rows OUT.json --plot OUT.png          (the table and plot again)
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from rankiqa import metrics
from rankiqa.data import mos
from rankiqa.train import adapt, probe

SIZES = (0, 25, 50, 100, 200, 400, None)  # None: every labelled photo of the kind
DRAWS = {25: 5, 50: 5, 100: 5, 200: 5, 400: 3}
SOURCE_ALPHAS = (1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0)  # probe.alphas' default
MARGIN = 0.05  # the recipes' signals.rank_margin
ARMS = ("zero-shot", "calibrate", "centred", "fresh", "fresh + ranking", "chosen")


def load(directory, name):
    with np.load(os.path.join(directory, name + ".npz")) as data:
        return {k: data[k] for k in data.files}


def kinds_of(paths):
    """BIQ2021's kind of each photo; make-rank-data's reference names (``ss01_1058_``) too."""
    return np.array([mos.biq2021_kind(str(p).replace("_", " ", 1)) for p in paths])


def source_head(x, y):
    """(K, B): the source's score = K . x + B, a ridge head on the photos `x` ``[n, d]``."""
    fit = probe.fit_ridge(x, y, SOURCE_ALPHAS, folds=5, seed=0)
    kernel = fit["weights"] / fit["std"]
    return kernel, fit["bias"] - float(kernel @ fit["mean"])


def with_ranking(x, y, groups, labelled):
    """The fresh arm plus the ranking hinge on `groups` ``[g, levels, d]``, at the rule's
    weight for `labelled` photos."""
    fresh = adapt.fit_arm("fresh", x, np.zeros(len(y)), y)
    start = {"mean": fresh.mean, "std": fresh.std, "weights": fresh.w, "bias": fresh.c,
             "alpha": fresh.alpha}
    fit = probe.fit_ranked(x, y, groups, start, probe.weight_for_labels(labelled), MARGIN)
    return adapt.LinearFit("fresh + ranking", 0.0, fit["bias"], fit["mean"], fit["std"],
                           fit["weights"], fit["alpha"])


def figures(predicted, y):
    return {"srocc": metrics.srocc(predicted, y), "plcc": metrics.plcc(predicted, y),
            "rmse": metrics.rmse(predicted, y)}


def one_draw(x, s, y, groups, val, n):
    """``{arm: figures}`` of every arm fitted on (x, s, y), measured on `val` (x, s, y)."""
    vx, vs, vy = val
    out = {"zero-shot": figures(vs, vy)}
    if n == 0:
        return out
    for arm in adapt.ARMS:
        out[arm] = figures(adapt.fit_arm(arm, x, s, y).predict(vx, vs), vy)
    out["fresh + ranking"] = figures(with_ranking(x, y, groups, n).predict(vx, vs), vy)
    fit, report = adapt.choose(x, s, y, "auto")
    out["chosen"] = {**figures(fit.predict(vx, vs), vy), "head": report["head"]}
    return out


def study(parts, unlabelled, log):
    train, val, rank = parts["train"], parts["val"], parts["rank"]
    tx, vx = train["features"].mean(1), val["features"].mean(1)  # a photo: its views' mean
    tkind, vkind = kinds_of(train["paths"]), kinds_of(val["paths"])
    rkind = kinds_of(rank["references"])
    held = np.array([os.path.abspath(str(p)) in unlabelled for p in train["paths"]])
    rows = []
    for kind in sorted(set(vkind) - {None}):
        start = time.time()
        kernel, bias = source_head(tx[(tkind != kind) & ~held], train["scores"][(tkind != kind) & ~held])
        pool = np.flatnonzero((tkind == kind) & ~held)
        vmask = vkind == kind
        val_k = (vx[vmask], vx[vmask] @ kernel + bias, val["scores"][vmask])
        groups = rank["features"][rkind == kind].mean(2)  # [groups, levels, d]
        for size in SIZES:
            n = len(pool) if size is None else size
            for draw in range(1 if size in (0, None) else DRAWS[size]):
                chosen = pool if size is None else np.random.default_rng(draw).choice(
                    pool, n, replace=False)
                x, y = tx[chosen], train["scores"][chosen]
                result = one_draw(x, x @ kernel + bias, y, groups, val_k, n)
                rows.append({"kind": kind, "n": int(n), "size": "all" if size is None else size,
                             "draw": draw, "arms": result})
        log(f"{kind}: {len(pool)} labelled photos to draw from, {int(vmask.sum())} validation "
            f"photos, {len(groups)} rank groups of its unlabelled photos; "
            f"{time.time() - start:.0f} s")
    return rows


def summarise(rows):
    """``{(kind, size): {arm: (mean srocc, sd, mean plcc), "chosen_heads": {...}, "n"}}``."""
    out = {}
    for row in rows:
        out.setdefault((row["kind"], row["size"]), []).append(row)
    table = {}
    for key, group in out.items():
        cell = {"n": group[0]["n"], "draws": len(group)}
        for arm in ARMS:
            got = [r["arms"][arm] for r in group if arm in r["arms"]]
            if got:
                s = [g["srocc"] for g in got]
                cell[arm] = (float(np.mean(s)), float(np.std(s)),
                             float(np.mean([g["plcc"] for g in got])))
        heads = [r["arms"]["chosen"]["head"] for r in group if "chosen" in r["arms"]]
        cell["chosen_heads"] = {h: heads.count(h) for h in sorted(set(heads))}
        table[key] = cell
    return table


def markdown(table):
    lines = ["| kind | N | " + " | ".join(ARMS) + " | chosen heads |",
             "|---|---|" + "---|" * (len(ARMS) + 1)]
    for (kind, size), cell in table.items():
        cells = []
        for arm in ARMS:
            if arm not in cell:
                cells.append("—")
                continue
            mean, sd, plcc = cell[arm]
            cells.append(f"{mean:.3f}" + (f" ± {sd:.3f}" if cell["draws"] > 1 else "")
                         + f" / {plcc:.3f}")
        heads = ", ".join(f"{h} {c}" for h, c in cell["chosen_heads"].items()) or "—"
        lines.append(f"| {kind} | {cell['n']} | " + " | ".join(cells) + f" | {heads} |")
    return "\n".join(lines)


def target_check(table, size=100):
    """The issue's test at N = `size`: the chosen path against the zero-shot source and the
    fresh head, per kind: (gain over the better of them, gain over each)."""
    lines = []
    for (kind, s), cell in table.items():
        if s != size:
            continue
        chosen, zero, fresh = cell["chosen"][0], cell["zero-shot"][0], cell["fresh"][0]
        lines.append(f"{kind} at N = {size}: chosen {chosen:.3f} - zero-shot {zero:.3f} = "
                     f"{chosen - zero:+.3f}; - fresh {fresh:.3f} = {chosen - fresh:+.3f}; "
                     f"against the better of them {chosen - max(zero, fresh):+.3f}")
    return "\n".join(lines)


def log_axis(ax, ticks, title, xlabel):
    """A log x axis labelled at `ticks` only, with its title and a light grid."""
    ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks], fontsize=8)
    ax.minorticks_off()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)


def plot(table, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({k for k, _ in table})
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), sharey=True)
    for ax, kind in zip(np.atleast_1d(axes), kinds):
        cells = sorted(((c["n"], c) for (k, _), c in table.items() if k == kind),
                       key=lambda t: t[0])
        for arm in ARMS[1:]:
            pts = [(n, c[arm][0]) for n, c in cells if arm in c]
            ax.plot(*zip(*pts), marker="o", label=arm)
        ax.axhline(cells[0][1]["zero-shot"][0], color="grey", ls="--", label="zero-shot (N = 0)")
        log_axis(ax, [n for n, _ in cells if n], f"{kind} as the user's own kind",
                 "labels of the kind (N)")
    np.atleast_1d(axes)[0].set_ylabel("SROCC within the kind (validation)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features")
    parser.add_argument("--unlabelled", required=True,
                        help="the photos whose ladders are the rankings (never drawn as labels)")
    parser.add_argument("--plot")
    parser.add_argument("--json")
    parser.add_argument("--rows", help="a finished study's --json: its table and plot again")
    args = parser.parse_args(argv)
    start = time.time()
    if args.rows:  # the table and plot again from a finished study's --json
        with open(args.rows, encoding="utf-8") as f:
            rows = json.load(f)
    else:
        parts = {name: load(args.features, name) for name in ("train", "val", "rank")}
        with open(args.unlabelled, encoding="utf-8") as f:
            unlabelled = {os.path.abspath(line.strip()) for line in f if line.strip()}
        rows = study(parts, unlabelled, lambda line: print(line, file=sys.stderr, flush=True))
    table = summarise(rows)
    print("Within-kind SROCC ± sd over draws / PLCC on the validation part's photos of the kind\n")
    print(markdown(table))
    print()
    print(target_check(table))
    print(f"\n{time.time() - start:.0f} s")
    save(rows, table, args, plot)
    return os.EX_OK


def save(rows, table, args, plot_fn):
    """A new study's rows to --json (a replot from --rows writes none), its plot to --plot."""
    if args.json and not args.rows:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        plot_fn(table, args.plot)


if __name__ == "__main__":
    sys.exit(main())
