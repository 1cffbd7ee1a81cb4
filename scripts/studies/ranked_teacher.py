"""A stronger teacher (README's models, "A stronger teacher"): biq2021-efficientnet-dinov2's
recipe — a ranking-aware ridge head on EfficientNet-Lite2's and DINOv2 ViT-S/14's pooled
features — refitted with the EfficientNet-Lite2 of biq2021-efficientnet-lite2-ranked (trained to
rank) in place of ImageNet's, beside the current teacher, on the same photos and views.

  python scripts/studies/ranked_teacher.py arrays OUT.npz
      the efficientnet_vit network's arrays: DINOv2's from its wheel, EfficientNet-Lite2's from
      the ranked built-in model (its head left out): `init.source` of probe_features.py
  python scripts/studies/ranked_teacher.py study RANKED_DIR IMAGENET_DIR [--json OUT]
      RANKED_DIR: probe_features.py's parts for that network (3 views); IMAGENET_DIR: the same
      photos' frozen ImageNet EfficientNet-Lite2 features (3 views), so that the current
      teacher's features are IMAGENET_DIR's beside RANKED_DIR's DINOv2 columns
"""

import argparse
import io
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probe_study import load, scores_of  # noqa: E402  (saved parts; a head's mean over views)

EFFICIENTNET = 4240  # the combined network's first columns: EfficientNet-Lite2's pooled statistics
# the ridge penalty the combined recipe's probe chose by cross-validation, and the one the
# student's teacher scores were cross-fitted at (scripts/recipes/biq2021_student_data.sh); each
# set's own choice could only raise its figures (choosing it costs ~10 min per set here)
ALPHA = 1e4
RANK_WEIGHT, MARGIN = 0.3, 0.05  # configs/finetune_biq2021_combined.yaml's probe


def write_arrays(out):
    from rankiqa.run import rundir
    from rankiqa.weights import builtin, pretrained

    wheels = pretrained.get_pretrained_arrays("efficientnet-lite2+dinov2-vits14",
                                              "efficientnet_vit")
    # the ranked model's own head is left out: the teacher fits its own
    arrays = builtin.graft(wheels, "biq2021-efficientnet-lite2-ranked", "efficientnet_vit")
    replaced = sum(arrays[n] is not wheels[n] for n in wheels)
    # the current teacher's head, so that the file loads as a whole model: the features the
    # study reads come before any head
    arrays.update(builtin.get("biq2021-efficientnet-dinov2").head_arrays())
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    rundir.write_atomic(out, buffer.getvalue())
    print(f"wrote {out}: {replaced} EfficientNet-Lite2 arrays from the ranked model, "
          f"{len(arrays) - replaced} from the wheels and biq2021-efficientnet-dinov2's head")


def feature_sets(ranked_dir, imagenet_dir):
    """{name: {part: features}} of the three heads compared, each part's rows in one order."""
    ranked = {n: load(ranked_dir, n) for n in ("train", "val", "ladders", "rank")}
    imagenet = {n: load(imagenet_dir, n) for n in ("train", "val", "ladders", "rank")}
    for part in ("train", "val"):
        if list(ranked[part]["paths"]) != list(imagenet[part]["paths"]):
            raise SystemExit(f"{ranked_dir} and {imagenet_dir} hold different {part} photos")
    sets = {
        "current teacher: ImageNet EfficientNet-Lite2 + DINOv2": {
            p: np.concatenate([imagenet[p]["features"], ranked[p]["features"][..., EFFICIENTNET:]],
                              axis=-1) for p in ranked},
        "ranked EfficientNet-Lite2 + DINOv2": {p: ranked[p]["features"] for p in ranked},
        "ranked EfficientNet-Lite2 alone": {
            p: ranked[p]["features"][..., :EFFICIENTNET] for p in ranked},
    }
    return sets, ranked


def head_scores(fit, features):
    """Mean over all the saved views of a ridge head's score: features ``[..., views, d]``."""
    return scores_of(fit, features, list(range(features.shape[-2])))


def measure(scores, val, ladder_scores, families):
    from rankiqa import metrics
    from rankiqa.data import mos
    from rankiqa.serve import ladders

    kinds = [mos.biq2021_kind(os.path.basename(p)) for p in val["paths"]]
    figures = metrics.summary(scores, val["scores"])
    per_kind = metrics.per_group(scores, val["scores"], kinds)
    pairs = [metrics.pair_accuracy(s) for s in ladder_scores]
    return {"srocc": figures["srocc"], "plcc": figures["plcc"],
            "kinds": {k: per_kind[k]["srocc"] for k in sorted(per_kind)},
            "ladders": float(np.mean(pairs)),
            "families": {f: float(np.mean([a for a, g in zip(pairs, families) if g == f]))
                         for f in ladders.DEFAULT_FAMILIES}}


def student_scores(ranked_features):
    """biq2021-efficientnet-lite2-ranked's own scores from the ranked network's features
    ``[..., 3 views, 6544]``: its head (a batch norm without scale, then one linear score) on
    views 0 and 2, which are its 2-view pyramid."""
    from rankiqa.train.probe import BN_EPSILON
    from rankiqa.weights import builtin

    arrays = builtin.get("biq2021-efficientnet-lite2-ranked").head_arrays()
    head = {k.rsplit("/", 1)[-1]: v for k, v in arrays.items()
            if k.startswith("efficientnet_lite2/logits/")}
    x = ranked_features[..., [0, 2], :EFFICIENTNET].astype(np.float64)
    z = (x - head["moving_mean"]) / np.sqrt(head["moving_variance"] + BN_EPSILON) + head["beta"]
    return (z @ head["weights"].reshape(-1)).mean(-1) + head["biases"][0]


def run_study(ranked_dir, imagenet_dir, json_path):
    """Each feature set's head fitted as the combined recipe fits it (ridge at `ALPHA` on the
    training photos' three views, then the ranking-aware refit at weight 0.3 on 400 rank
    groups); figures on the validation part and its ladders, and the out-of-fold judgement of
    the training photos that a student is taught with (`rankiqa teach`'s 5-fold cross-fit of
    ridge at `ALPHA`, the three own views)."""
    from rankiqa.train import probe, teach

    sets, ranked = feature_sets(ranked_dir, imagenet_dir)
    targets = ranked["train"]["scores"]
    rows, heads = {}, {}
    print("| teacher's features | out-of-fold SROCC / PLCC (training photos) | val SROCC | "
          "val PLCC | ss01 / ss02 / ss03 | ladders (gblur, wn, jpeg, contrast) |")
    print("|---|---|---|---|---|---|")
    for name, parts in sets.items():
        x = parts["train"]
        n, views, d = x.shape
        _, _, oof, _ = teach.cross_fit(x, targets, views, 5, 0, [ALPHA])
        fit = probe.fit_ridge_at(x.reshape(n * views, d), np.repeat(targets, views), ALPHA)
        head = probe.fit_ranked(x.reshape(n * views, d), np.repeat(targets, views),
                                parts["rank"].mean(2), fit, RANK_WEIGHT, MARGIN)
        heads[name] = head
        result = measure(head_scores(head, parts["val"]), ranked["val"],
                         head_scores(head, parts["ladders"]), ranked["ladders"]["families"])
        rows[name] = {"oof_srocc": oof["oof_srocc"],
                      "oof_plcc": oof["oof_plcc"], **result,
                      "val_scores": head_scores(head, parts["val"]).tolist()}
        print(row_line(name, rows[name]), flush=True)
    # (b) born-again: the new teacher's score averaged with its student's, half each (fixed
    # beforehand, not chosen on the validation part). The student was trained on the training
    # photos' MOS, so no out-of-fold judgement of them exists for it.
    new = "ranked EfficientNet-Lite2 + DINOv2"
    student = {p: student_scores(ranked[p]["features"]) for p in ("val", "ladders")}
    for name, scores in (("biq2021-efficientnet-lite2-ranked (the student, shipped)", student),
                         (f"{new}, averaged with the student", {
                             p: 0.5 * student[p] + 0.5 * head_scores(heads[new], sets[new][p])
                             for p in ("val", "ladders")})):
        rows[name] = {**measure(scores["val"], ranked["val"], scores["ladders"],
                                ranked["ladders"]["families"]),
                      "val_scores": scores["val"].tolist()}
        print(row_line(name, rows[name]), flush=True)
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"paths": [str(p) for p in ranked["val"]["paths"]],
                       "val_mos": ranked["val"]["scores"].tolist(), "rows": rows}, f)
    return rows


def row_line(name, row):
    kinds = " / ".join(f"{row['kinds'][k]:.3f}" for k in sorted(row["kinds"]))
    families = ", ".join(f"{v:.3f}" for v in row["families"].values())
    oof = (f"{row['oof_srocc']:.4f} / {row['oof_plcc']:.4f}" if "oof_srocc" in row else "—")
    return (f"| {name} | {oof} | {row['srocc']:.4f} | "
            f"{row['plcc']:.4f} | {kinds} | {row['ladders']:.3f} ({families}) |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("arrays").add_argument("out")
    study = sub.add_parser("study")
    study.add_argument("ranked_dir")
    study.add_argument("imagenet_dir")
    study.add_argument("--json")
    args = parser.parse_args(argv)
    if args.what == "arrays":
        write_arrays(args.out)
    else:
        run_study(args.ranked_dir, args.imagenet_dir, args.json)
    return os.EX_OK


if __name__ == "__main__":
    sys.exit(main())
