"""Probe studies on saved frozen features (scripts/studies/probe_features.py's OUT_DIR): the views
ablation and the ranking-aware probe's weight sweep (README, "BIQ2021 with EfficientNet-Lite2
and DINOv2"). Every head is fitted on the training part only, alpha by cross-validated SROCC
there (rankiqa.train.probe.fit_ridge); the validation part and the ladders only measure.

  python scripts/studies/probe_study.py FEATURES_DIR views
  python scripts/studies/probe_study.py FEATURES_DIR backbones [--split 4240]
  python scripts/studies/probe_study.py FEATURES_DIR ranking [--weights 0.1,0.3,1] [--margin 0.05]
      [--views 0,1,2]
"""

import argparse
import os
import sys

import numpy as np

from rankiqa import metrics
from rankiqa.serve import ladders
from rankiqa.train import probe

ALPHAS = (1e3, 3e3, 1e4, 3e4, 1e5)


def load(directory, name):
    with np.load(os.path.join(directory, name + ".npz")) as data:
        return {k: data[k] for k in data.files}


def fit_views(train, view_ids):
    x = train["features"][:, view_ids]
    n, v, d = x.shape
    return probe.fit_ridge(x.reshape(n * v, d), np.repeat(train["scores"], v), ALPHAS,
                           groups=np.repeat(np.arange(n), v))


def scores_of(fit, features, view_ids):
    """Mean over the views of the head's score: features ``[..., views, d]``."""
    z = (features[..., view_ids, :].astype(np.float64) - fit["mean"]) / fit["std"]
    return (z @ fit["weights"]).mean(-1) + fit["bias"]


def measure(fit, val, ladder, view_ids):
    summary = metrics.summary(scores_of(fit, val["features"], view_ids), val["scores"])
    ladder_scores = scores_of(fit, ladder["features"], view_ids)  # [ladders, levels]
    per_family = {f: float(np.mean([metrics.pair_accuracy(s) for s, g in
                                    zip(ladder_scores, ladder["families"]) if g == f]))
                  for f in ladders.DEFAULT_FAMILIES}
    return {"srocc": summary["srocc"], "plcc": summary["plcc"],
            "ladders": float(np.mean([metrics.pair_accuracy(s) for s in ladder_scores])),
            "families": per_family}


def line(what, fit, result, extra=""):
    fam = ", ".join(f"{v:.3f}" for v in result["families"].values())
    # a ranked fit keeps ridge's alpha; its own SROCC is not cross-validated
    cv = "—" if "rank" in fit else f"{max(fit['cv_srocc'].values()):.4f}"
    return (f"| {what} | {cv} (alpha {fit['alpha']:g}) | {result['srocc']:.4f} | "
            f"{result['plcc']:.4f} | {result['ladders']:.3f} ({fam}) |{extra}")


def study_views(directory):
    train, val, ladder = (load(directory, n) for n in ("train", "val", "ladders"))
    print("| views | CV SROCC | val SROCC | val PLCC | ladders (gblur, wn, jpeg, contrast) |")
    for name, ids in (("native centre", [0]), ("whole picture", [2]),
                      ("native + whole (the recipes')", [0, 2]),
                      ("native + intermediate + whole", [0, 1, 2])):
        fit = fit_views(train, ids)
        print(line(name, fit, measure(fit, val, ladder, ids)), flush=True)


def study_backbones(directory, split):
    """The combined network's features are EfficientNet-Lite2's (the first `split` columns)
    then DINOv2's: each backbone's probe alone, from the same features."""
    train, val, ladder = (load(directory, n) for n in ("train", "val", "ladders"))
    print("| features | CV SROCC | val SROCC | val PLCC | ladders (gblur, wn, jpeg, contrast) |")
    for name, columns in (("EfficientNet-Lite2", slice(0, split)),
                          ("DINOv2 ViT-S/14", slice(split, None)), ("both", slice(None))):
        part = {k: {**v, "features": v["features"][..., columns]}
                for k, v in (("train", train), ("val", val), ("ladders", ladder))}
        fit = fit_views(part["train"], [0, 2])
        print(line(name, fit, measure(fit, part["val"], part["ladders"], [0, 2])), flush=True)


def study_ranking(directory, rank_weights, margin, view_ids=(0, 2)):
    train, val, ladder, rank = (load(directory, n) for n in ("train", "val", "ladders", "rank"))
    view_ids = list(view_ids)
    fit = fit_views(train, view_ids)
    x = train["features"][:, view_ids]
    n, v, d = x.shape
    rows, targets = x.reshape(n * v, d), np.repeat(train["scores"], v)
    groups = rank["features"][:, :, view_ids].mean(2)  # [groups, levels, d]
    # held-out check: the groups of one reference in five are not fitted
    refs = sorted(set(rank["references"]))
    held = np.isin(rank["references"], refs[::5])
    print(f"{n} training images x {v} views, {len(groups)} rank groups "
          f"({int(held.sum())} held out), margin {margin}")
    print("| ranking weight | CV SROCC | val SROCC | val PLCC | ladders (gblur, wn, jpeg, "
          "contrast) | held-out group pairs |")

    def held_accuracy(f):
        s = scores_of(f, rank["features"][held][:, :, view_ids], list(range(v)))
        return float(np.mean([metrics.pair_accuracy(g) for g in s]))

    print(line("0 (ridge)", fit, measure(fit, val, ladder, view_ids),
               f" {held_accuracy(fit):.3f} |"), flush=True)
    for weight in rank_weights:
        ranked = probe.fit_ranked(rows, targets, groups[~held], fit, weight, margin)
        print(line(f"{weight:g}", ranked, measure(ranked, val, ladder, view_ids),
                   f" {held_accuracy(ranked):.3f} | {ranked['rank']}"), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features_dir")
    parser.add_argument("study", choices=("views", "backbones", "ranking"))
    parser.add_argument("--split", type=int, default=4240,
                        help="backbones: the first backbone's feature count")
    parser.add_argument("--weights", default="0.03,0.1,0.3,1,3")
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--views", default="0,2",
                        help="ranking: the saved views the head reads (0,2: the recipes' two)")
    args = parser.parse_args(argv)
    if args.study == "views":
        study_views(args.features_dir)
    elif args.study == "backbones":
        study_backbones(args.features_dir, args.split)
    else:
        study_ranking(args.features_dir, [float(w) for w in args.weights.split(",")],
                      args.margin, [int(v) for v in args.views.split(",")])
    return os.EX_OK


if __name__ == "__main__":
    sys.exit(main())
