"""`rankiqa teach`: a teacher model's scores for many views of the training photos, which a
student (`rankiqa finetune` with ``finetune.teacher_table``) then learns to give.

Reads top to bottom: the photos (the training part of a finetune config's seeded split, never
a validation photo, minus ``--exclude`` lists such as ladder photos), their views (the
teacher's own pyramid views plus seeded random ones: a scale, a place and a flip each,
`rankiqa.preprocess.placed_view`), the teacher's pooled features of every view (cached in
shards: a killed run resumes at its last whole shard), then cross-fitting: the photos split
into folds, a ridge head fitted on the other folds' photos scores each fold's views, so every
score is the teacher's judgement of a photo its head never saw, not its in-sample fit. Written
last, whole: ``teacher.csv`` (path, view, scale, y, x, flip, score, fold) and ``teach.json``.
"""

import concurrent.futures
import csv
import io
import os
import time

import numpy as np

from rankiqa import metrics, rundir, scoring
from rankiqa.data import mos
from rankiqa.data.teacher import TABLE_COLUMNS
from rankiqa.data import views as views_lib
from rankiqa.config import TransferConfig
from rankiqa.errors import InputError
from rankiqa.progress import Progress
from rankiqa.train import probe

TABLE_NAME = "teacher.csv"
REPORT_NAME = "teach.json"
PLAN_NAME = "plan.json"
FEATURES_DIR = "features"
SHARD_PHOTOS = 128  # photos per feature shard: a kill loses at most one shard (~1 min, combined)


def view_specs(own, extra, seed, index):
    """``[(scale, y, x, flip)]`` of one photo: `own` pyramid views (centre, scale k/(own-1)),
    then `extra` random ones drawn from ``(seed, index)`` alone, so that any photo's views can
    be made again without the others'."""
    specs = [(k / (own - 1) if own > 1 else 0.0, 0.5, 0.5, 0) for k in range(own)]
    rng = np.random.default_rng([seed, index])
    for _ in range(extra):
        scale, y, x = rng.uniform(size=3)
        specs.append((round(float(scale), 4), round(float(y), 4), round(float(x), 4),
                       int(rng.integers(2))))
    return specs


def training_photos(data_cfg, exclude_files=()):
    """The training part of `data_cfg`'s split (`rankiqa.data.mos.load_splits`) minus every
    photo an `exclude_files` list names (one path per line, as ladders take them)."""
    parts = mos.load_splits(data_cfg)
    excluded = set()
    for name in exclude_files:
        excluded |= {os.path.realpath(p) for p in views_lib.read_path_list(name)}
    # the split itself refuses a photo in both the training and a held-out part
    photos = [it for it in parts["train"] if os.path.realpath(it.path) not in excluded]
    if not photos:
        raise InputError("no training photo is left to teach on")
    return photos


def teach(data_cfg, output_dir, model=None, extra_views=2, exclude_files=(), folds=5, seed=0,
          alphas=TransferConfig.probe_alphas, device="auto", log=print):
    """Writes `output_dir`/teacher.csv and teach.json (see the module docstring); resumes
    the feature shards a killed run left. Returns teach.json's content.

    Raises:
      InputError: the folder holds a run planned otherwise, the teacher has no pooled
        features or no pyramid views, too few photos for the folds.
    """
    photos = training_photos(data_cfg, exclude_files)
    if len(photos) < 2 * folds:
        raise InputError(f"{len(photos)} training photos are too few for {folds} folds")
    started = time.monotonic()
    with rundir.locked(output_dir, "teach", log):
        scorer = scoring.load_scorer(model, device=device, normalised=True)
        with scorer:
            if scorer.features is None:
                raise InputError(f"the teacher {scorer.info.get('ref') or model} exposes no pooled "
                                 "features; teach with a model whose head is linear on them")
            own = scorer.views
            if own.mode != "pyramid" and own.count > 1:
                raise InputError(f"teach places the teacher's own views as a pyramid; its views "
                                 f"are {own.describe()}")
            specs = [view_specs(own.count, extra_views, seed, k) for k in range(len(photos))]
            plan = {"model": scorer.info.get("ref") or model, "views": own.as_dict(),
                    "extra_views": extra_views, "seed": seed,
                    "photos": [it.path for it in photos]}
            _check_plan(output_dir, plan)
            features = _features(scorer, photos, specs, own.crop, output_dir, log)
        log(f"teach: cross-fitting {folds} heads on {len(photos)} photos x {own.count} own views")
        scores, fold, report = cross_fit(features, np.array([it.score for it in photos]),
                                         own.count, folds, seed, alphas)
    report.update(plan={k: v for k, v in plan.items() if k != "photos"}, photos=len(photos),
                  rows=int(scores.size), seconds=round(time.monotonic() - started, 1))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    for k, item in enumerate(photos):
        for v, spec in enumerate(specs[k]):
            writer.writerow([item.path, v, *spec, f"{scores[k, v]:.6f}", int(fold[k])])
    rundir.write_atomic(os.path.join(output_dir, TABLE_NAME), buffer.getvalue())
    rundir.write_json_atomic(os.path.join(output_dir, REPORT_NAME), report)
    log(f"teach: {report['rows']} views of {len(photos)} photos scored by heads that never saw "
        f"them (out-of-fold srocc {report['oof_srocc']:.4f}, plcc {report['oof_plcc']:.4f} "
        f"on own views) -> {os.path.join(output_dir, TABLE_NAME)}")
    return report


def _check_plan(output_dir, plan):
    """A folder holds one plan: resuming under another would mix two teachers' features."""
    path = os.path.join(output_dir, PLAN_NAME)
    if os.path.exists(path):
        old = rundir.read_json(path)
        changed = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
        if changed:
            raise InputError(f"{output_dir} holds a teach run planned with other "
                             f"{', '.join(changed)}; choose another --output-dir")
    else:
        rundir.write_json_atomic(path, plan)


def _features(scorer, photos, specs, crop, output_dir, log):
    """``[photos, views, d]`` float32: the teacher's pooled features of each view, from shards
    of `SHARD_PHOTOS` photos, each written whole."""
    folder = os.path.join(output_dir, FEATURES_DIR)
    os.makedirs(folder, exist_ok=True)
    starts = list(range(0, len(photos), SHARD_PHOTOS))
    todo = [s for s in starts if not os.path.exists(_shard_path(folder, s))]
    if len(todo) < len(starts):
        log(f"teach: resuming: {len(starts) - len(todo)} of {len(starts)} feature shards done")
    total = sum(min(SHARD_PHOTOS, len(photos) - s) for s in todo)
    bar = Progress("teach: features of", total, lambda line, end: log(line))
    bar.update(0)
    done = 0
    with concurrent.futures.ThreadPoolExecutor(scoring.DECODE_THREADS) as pool:
        for start in todo:
            chunk = range(start, min(start + SHARD_PHOTOS, len(photos)))
            crops = list(pool.map(lambda k: views_lib.spec_views(photos[k].path, specs[k], crop), chunk))
            per_photo = len(specs[chunk[0]])
            values = scorer.run(scorer.features, np.concatenate(crops).astype(np.float32))
            shard = values.reshape(len(chunk), per_photo, -1)
            with rundir.writing(_shard_path(folder, start)) as tmp:
                np.save(tmp, shard)
            done += len(chunk)
            bar.update(done)
    return np.concatenate([np.load(_shard_path(folder, s)) for s in starts]).astype(np.float32)


def _shard_path(folder, start):
    return os.path.join(folder, f"photos-{start:06d}.npy")


def fixed_ridge(x, y, alpha):
    """`rankiqa.train.probe.fit_ridge`'s final fit for one given `alpha`, by one linear solve
    instead of cross-validation's eigendecompositions (6,544 combined features: seconds
    against minutes per fold)."""
    x = np.asarray(x, np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-8
    xt = (x - mean) / std
    weights = np.linalg.solve(xt.T @ xt + alpha * np.eye(x.shape[1]), xt.T @ (y - y.mean()))
    return {"mean": mean, "std": std, "weights": weights, "bias": float(y.mean()),
            "alpha": float(alpha)}


def cross_fit(features, targets, own, folds, seed, alphas):
    """Out-of-fold scores of every view.

    Args:
      features: ``[photos, views, d]``; the first `own` views of each photo are the teacher's
        own (the rows its heads are fitted on, each with the photo's score).
      targets: ``[photos]`` normalised scores.
      alphas: ridge penalties, chosen per fold by cross-validation; one: that one.

    Returns:
      (scores ``[photos, views]``, fold ``[photos]``, report: alpha per fold and the
      out-of-fold SROCC/PLCC of each photo's mean own-view score).
    """
    n, views, d = features.shape
    fold = np.random.default_rng(seed).permutation(n) % folds
    scores = np.zeros((n, views))
    chosen = []
    for k in range(folds):
        fit_rows = fold != k
        x = features[fit_rows, :own].reshape(-1, d)
        y = np.repeat(targets[fit_rows], own)
        fit = (fixed_ridge(x, y, alphas[0]) if len(alphas) == 1 else probe.fit_ridge(
            x, y, alphas, folds, seed=seed, groups=np.repeat(np.arange(fit_rows.sum()), own)))
        held = features[~fit_rows].reshape(-1, d)
        scores[~fit_rows] = (((held - fit["mean"]) / fit["std"]) @ fit["weights"]
                             + fit["bias"]).reshape(-1, views)
        chosen.append(fit["alpha"])
    summary = metrics.summary(scores[:, :own].mean(axis=1), targets)
    return scores, fold, {"folds": folds, "alphas": chosen, "oof_srocc": summary["srocc"],
                          "oof_plcc": summary["plcc"]}

