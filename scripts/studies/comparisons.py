"""People's comparisons against ratings, with simulated raters (docs/label-efficiency.md,
"Comparisons or ratings"), on the leave-one-kind-out study's saved features
(scripts/studies/leave_one_kind_out.sh makes them).

Each kind of BIQ2021 photo in turn is the user's own; the model they start from is the source of
that study (biq2021-efficientnet-lite2's recipe fitted without the kind). A budget of B answers
is spent on the kind's training photos in one of these ways:

  ratings x1 / x3   B / k photos, each rated 1-5 by k raters (the mean is the label)
  random pairs      comparisons among B / 4 photos (each in ~8 comparisons), random spanning
                    trees
  nearest pairs     the same photos, pairs nearest in the current scores
  active pairs      the same photos, pairs of most expected information, the source's
                    scores as the prior (`rankiqa rate --pairs active --model`, agreement 0.7)
  random / active pairs, wide   as those, among B photos (each in ~2 comparisons): as many
                    photos as one rating each

Pairs are scaled by Thurstone Case V with the source's scores as the prior, as `rankiqa scale
--model` does (the posterior mean; the prior every pair way chose its pairs under). Then the same
head is fitted on every way's labels (`rankiqa calibrate --head centred`: the source's score and
its features, ridge-centred on it) and measured within the kind on the validation part's photos
of that kind, which nothing is fitted on. Beside it, how well the labels themselves order the
photos they were collected for (SROCC against their MOS): what the pair choice aims at.

The simulated rater sees a photo's MOS (on [0, 1]) with Gaussian noise of sd NOISE, fresh at
every answer: a pair goes to the photo seen better, a rating is the seen quality on 1-5,
rounded. The noise is the same for both kinds of answer and varied (--noise); one answer of
either kind is taken to cost the same time (Mantiuk et al. 2012 found comparisons no slower per
answer than ratings; where they are, read the budget axis accordingly).

  python scripts/studies/comparisons.py FEATURES_DIR [--noise 0.1 0.2] [--plot OUT.png]
      [--json OUT.json]
  python scripts/studies/comparisons.py FEATURES_DIR --rows OUT.json --plot OUT.png
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import leave_one_kind_out as loko  # noqa: E402  (the source heads and the features' loading)

from rankiqa import metrics  # noqa: E402
from rankiqa.judge import pairs, thurstone  # noqa: E402
from rankiqa.train import adapt  # noqa: E402

BUDGETS = (100, 200, 400, 800, 1600)  # answers
DRAWS = 3
AGREEMENT = 0.7  # rankiqa rate's --agreement default
# way: answers per photo asked about (pairs: each answer names two photos)
WAYS = {"ratings x1": 1, "ratings x3": 3, "random pairs": 4, "nearest pairs": 4,
        "active pairs": 4, "random pairs, wide": 1, "active pairs, wide": 1}


def rate(q, raters, noise, rng):
    """Mean 1-5 rating of photos of quality `q` ([0, 1]) by `raters` simulated raters each."""
    seen = q[:, None] + rng.normal(0, noise, (len(q), raters))
    return np.clip(np.round(1 + 4 * seen), 1, 5).mean(1)


def compare(kind, q, budget, noise, rng, prior):
    """Thurstone scores of the photos of quality `q` after `budget` answers to `kind` pairs."""
    answers = pairs.Answers.none()
    mean, sd = prior
    while len(answers.i) < budget:
        batch = pairs.next_batch(kind, len(q), answers, rng, mean, sd)
        batch = batch[:budget - len(answers.i)]
        i, j = (np.array(side) for side in zip(*batch))
        seen = q[i] - q[j] + rng.normal(0, noise, len(i)) - rng.normal(0, noise, len(i))
        answers = pairs.Answers(np.append(answers.i, i), np.append(answers.j, j),
                                np.append(answers.outcome, (seen > 0).astype(float)))
    return thurstone.fit(answers.i, answers.j, answers.outcome, len(q), sd,
                         mean=np.zeros(len(q)) if mean is None else mean)


def one_budget(pool, tx, q, source, val, budget, noise, seed):
    """``{way: within-kind figures}`` of every way at one budget and draw."""
    kernel, bias = source
    vx, vy = val
    rng = np.random.default_rng([seed, budget])
    out = {}
    for way, per_photo in WAYS.items():
        chosen = rng.choice(pool, min(len(pool), budget // per_photo), replace=False)
        if way.startswith("ratings"):
            y = rate(q[chosen], per_photo, noise, rng)
        else:
            s = tx[chosen] @ kernel + bias
            prior = pairs.model_prior(s, AGREEMENT)
            y = compare(way.split()[0], q[chosen], budget, noise, rng, prior)
        x = tx[chosen]
        fit = adapt.fit_arm("centred", x, x @ kernel + bias, y)
        predicted = fit.predict(vx, vx @ kernel + bias)
        out[way] = {"srocc": metrics.srocc(predicted, vy), "plcc": metrics.plcc(predicted, vy),
                    "photos": int(len(chosen)), "labels_srocc": metrics.srocc(y, q[chosen])}
    return out


def study(parts, noises, log):
    train, val = parts["train"], parts["val"]
    tx, vx = train["features"].mean(1), val["features"].mean(1)
    tkind, vkind = loko.kinds_of(train["paths"]), loko.kinds_of(val["paths"])
    rows = []
    for kind in sorted(set(vkind) - {None}):
        start = time.time()
        source = loko.source_head(tx[tkind != kind], train["scores"][tkind != kind])
        pool = np.flatnonzero(tkind == kind)
        vmask = vkind == kind
        zero = metrics.srocc(vx[vmask] @ source[0] + source[1], val["scores"][vmask])
        for noise in noises:
            for budget in BUDGETS:
                for draw in range(DRAWS):
                    result = one_budget(pool, tx, train["scores"], source,
                                        (vx[vmask], val["scores"][vmask]), budget, noise, draw)
                    rows.append({"kind": kind, "noise": noise, "budget": budget, "draw": draw,
                                 "zero-shot": zero, "ways": result})
        log(f"{kind}: {len(pool)} photos to ask about, {int(vmask.sum())} validation photos, "
            f"zero-shot SROCC {zero:.3f}; {time.time() - start:.0f} s")
    return rows


def summarise(rows):
    """``{(kind, noise, budget): {way: (mean srocc, sd), "zero-shot": srocc}}``."""
    cells = {}
    for row in rows:
        cells.setdefault((row["kind"], row["noise"], row["budget"]), []).append(row)
    table = {}
    for key, group in sorted(cells.items()):
        cell = {"zero-shot": group[0]["zero-shot"]}
        for way in WAYS:
            s = [r["ways"][way]["srocc"] for r in group]
            cell[way] = (float(np.mean(s)), float(np.std(s)),
                         float(np.mean([r["ways"][way]["labels_srocc"] for r in group])))
        table[key] = cell
    return table


def markdown(table, labels=False):
    """The model's within-kind SROCC (± sd over draws), or with `labels` the labels' own
    SROCC against the MOS of the photos they were collected for."""
    lines = ["| kind | rater noise | answers | " + ("" if labels else "zero-shot | ")
             + " | ".join(WAYS) + " |",
             "|---|---|---|" + ("" if labels else "---|") + "---|" * len(WAYS)]
    for (kind, noise, budget), cell in table.items():
        values = [f"{cell[w][2]:.3f}" if labels else f"{cell[w][0]:.3f} ± {cell[w][1]:.3f}"
                  for w in WAYS]
        lines.append(f"| {kind} | {noise:g} | {budget} | "
                     + ("" if labels else f"{cell['zero-shot']:.3f} | ")
                     + " | ".join(values) + " |")
    return "\n".join(lines)


def target_check(table):
    """The issue's test, as far as the budgets measured go: active pairs at B against random
    pairs at 2 B (>= 1.5 B), for the model and for the labels' own order."""
    lines = []
    for (kind, noise, budget), cell in table.items():
        if (kind, noise, 2 * budget) not in table:
            continue
        double = table[(kind, noise, 2 * budget)]["random pairs"]
        said = [f"{what} {cell['active pairs'][c]:.3f} vs {double[c]:.3f} "
                f"({cell['active pairs'][c] - double[c]:+.3f})"
                for c, what in ((0, "model"), (2, "labels"))]
        lines.append(f"{kind}, noise {noise:g}: active pairs at {budget} answers against random "
                     f"pairs at {2 * budget}: " + "; ".join(said))
    return "\n".join(lines)


def plot(table, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({k for k, _, _ in table})
    noises = sorted({n for _, n, _ in table})
    fig, axes = plt.subplots(len(noises), len(kinds), figsize=(4.6 * len(kinds),
                                                               3.6 * len(noises)), squeeze=False)
    for ax, (noise, kind) in zip(axes.ravel(), [(n, k) for n in noises for k in kinds]):
        for way in WAYS:
            ax.plot(BUDGETS, [table[(kind, noise, b)][way][0] for b in BUDGETS], marker="o",
                    label=way)
        ax.axhline(table[(kind, noise, BUDGETS[0])]["zero-shot"], color="grey", ls="--",
                   label="the source (no answer)")
        loko.log_axis(ax, BUDGETS, f"{kind}, rater noise {noise:g}", "answers")
    for row in axes:
        row[0].set_ylabel("SROCC within the kind (validation)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument("--plot")
    parser.add_argument("--json")
    parser.add_argument("--rows", help="a finished study's --json: its table and plot again")
    args = parser.parse_args(argv)
    start = time.time()
    if args.rows:
        with open(args.rows, encoding="utf-8") as f:
            rows = [{**r, "noise": float(r["noise"])} for r in json.load(f)]
    else:
        parts = {name: loko.load(args.features, name) for name in ("train", "val")}
        rows = study(parts, args.noise, lambda line: print(line, file=sys.stderr, flush=True))
    table = summarise(rows)
    print(f"Within-kind SROCC ± sd over {DRAWS} draws on the validation part's photos of the "
          "kind\n")
    print(markdown(table))
    print("\nThe labels' own SROCC against the MOS of the photos they were collected for\n")
    print(markdown(table, labels=True))
    print()
    print(target_check(table))
    print(f"\n{time.time() - start:.0f} s")
    loko.save(rows, table, args, plot)
    return os.EX_OK


if __name__ == "__main__":
    sys.exit(main())
