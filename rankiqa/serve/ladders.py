"""Does a model still rank distortions? Ladders of synthetic distortions on held-out photos.

A *ladder* is a photo and its copies at levels 1..5 of one distortion family (the ranking data's
families, `rankiqa.data.distortions`): its scores should fall with the level. A model fine-tuned
on real scores can forget what stage one taught (measured on the VGG recipe: pair accuracy 0.85
after stage one, 0.79 after fine-tuning), so every recipe reports this beside SROCC, on photos
that no stage trained on (e.g. the validation part of the MOS split).

Figures: *pair accuracy*, the share of the 15 (level i, level j > i) pairs of a ladder where
the cleaner copy scores higher (ties count half), and per family the mean SROCC between level
and score (negated: 1 = perfectly falling).
"""

import json
import os

import numpy as np
from scipy import stats

from rankiqa import metrics
from rankiqa.run import rundir
from rankiqa.data import distortions
from rankiqa.data import images as images_lib
from rankiqa.data.images import BadImageError
from rankiqa.errors import InputError

DEFAULT_FAMILIES = ("gblur", "wn", "jpeg", "contrast")


def ladder(image, family, seed):
    """``[levels + 1, H, W, 3]``: the photo and its distorted copies, mildest first."""
    rng = np.random.default_rng([seed, sum(map(ord, family))])
    _, values = distortions.get_distortion(family)
    return [image] + [distortions.distort(image, family, k, rng) for k in range(1, len(values) + 1)]


def evaluate_ladders(scorer, paths, families=DEFAULT_FAMILIES, max_side=512, seed=0, log=print):
    """Scores every ladder of every photo with `scorer`'s own views.

    Returns:
      dict: ``pair_accuracy`` (all ladders), ``families`` (per family: ``pair_accuracy``,
      ``srocc`` mean and ``ladders`` count), ``photos``, ``skipped`` and per-ladder ``scores``.
    """
    for family in families:
        distortions.get_distortion(family)  # an unknown name fails before any work
    if not paths:
        raise InputError("ladders need at least one photo")
    per_family = {f: {"pair_accuracy": [], "srocc": []} for f in families}
    rows, skipped = [], []
    for n, path in enumerate(paths):
        try:
            image = images_lib.load_image(path, max_side)
        except BadImageError as e:
            skipped.append(str(e))
            continue
        for family in families:
            copies = ladder(image, family, seed)
            if np.array_equal(copies[-1], copies[0]):
                continue  # e.g. desaturating a grey photo: nothing to rank
            scores = scorer.score_items(copies)
            per_family[family]["pair_accuracy"].append(metrics.pair_accuracy(scores))
            per_family[family]["srocc"].append(
                float(-stats.spearmanr(np.arange(len(scores)), scores)[0]))
            rows.append({"photo": path, "family": family, "scores": [float(s) for s in scores]})
        if log and (n + 1) % 10 == 0:
            log(f"ladders: {n + 1}/{len(paths)} photos")
    if not rows:
        raise InputError(f"no ladder could be made ({len(skipped)} photos unreadable)")
    summary = {
        "pair_accuracy": metrics.pair_accuracy([r["scores"] for r in rows]),
        "families": {f: {"pair_accuracy": float(np.mean(v["pair_accuracy"])),
                         "srocc": float(np.nanmean(v["srocc"])),
                         "ladders": len(v["pair_accuracy"])}
                     for f, v in per_family.items() if v["pair_accuracy"]},
        "photos": len(paths) - len(skipped), "skipped": skipped, "views": scorer.views.as_dict(),
        "scores": rows,
    }
    return summary


def write_summary(summary, output_dir):
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "ladders.json")
    rundir.write_atomic(path, json.dumps(summary, indent=2))
    return path
