"""`rankiqa teach`: a teacher model's scores for many views of the training photos, which a
student (`rankiqa finetune` with ``signals.teacher_table``) then learns to give.

Reads top to bottom: the photos (the training part of a finetune config's seeded split, never
a validation photo, minus ``--exclude`` lists such as ladder photos), their views (the
teacher's own pyramid views plus seeded random ones: a scale, a place and a flip each,
`rankiqa.preprocessing.preprocess.placed_view`), the teacher's pooled features of every view (cached in
shards: a killed run resumes at its last whole shard), then cross-fitting: the photos split
into folds, a ridge head fitted on the other folds' photos scores each fold's views, so every
score is the teacher's judgement of a photo its head never saw, not its in-sample fit. With a
rank list (``--rank-list``), every image of the rank data (each reference and its distorted
copies) is viewed the teacher's own way too and scored by the head of its reference photo's
fold: a distorted copy of a training photo by a head fitted without that photo. Written last,
whole: ``teacher.csv`` (path, view, scale, y, x, flip, score, fold) and ``teach.json``.
"""

import csv
import io
import os
import time

import numpy as np

from rankiqa import metrics
from rankiqa.run import rundir
from rankiqa.serve import scoring
from rankiqa.data import generate, lists, mos
from rankiqa.data.teacher import TABLE_COLUMNS
from rankiqa.data import images as images_lib
from rankiqa.preprocessing import views as views_lib
from rankiqa.config import ProbeConfig
from rankiqa.errors import InputError
from rankiqa.run.progress import Progress
from rankiqa.train import probe

TABLE_NAME = "teacher.csv"
REPORT_NAME = "teach.json"
PLAN_NAME = "plan.json"
RANK_PLAN_NAME = "plan_rank.json"  # its own plan: adding a rank list keeps the photos' shards
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
    """``(photos, held_out)``: the training part of `data_cfg`'s split
    (`rankiqa.data.mos.load_splits`) minus every photo an `exclude_files` list names (one path
    per line, as ladders take them), and the real paths of the photos left out (validation,
    test, excluded), which nothing taught may show."""
    parts = mos.load_splits(data_cfg)
    excluded = set()
    for name in exclude_files:
        excluded |= {os.path.realpath(p) for p in images_lib.read_path_list(name)}
    # the split itself refuses a photo in both the training and a held-out part
    photos = [it for it in parts["train"] if os.path.realpath(it.path) not in excluded]
    if not photos:
        raise InputError("no training photo is left to teach on")
    return photos, excluded | {os.path.realpath(it.path) for it in parts["val"] + parts["test"]}


def rank_images(rank_list, held_out):
    """``(paths, references, groups)`` of a rank list: every image once (a reference's
    pristine copy is in each of its families' groups), the real path of each one's reference
    photo, and the groups (`rankiqa.data.lists.read_rank_list`).

    Raises:
      InputError: a reference is a validation or test photo or an excluded one (a ladder
        photo): the student would learn the photos it is judged on.
    """
    groups = lists.read_rank_list(rank_list)
    sources = generate.reference_sources(rank_list)
    paths, references = {}, {}
    for group in groups:
        if group.reference not in sources:
            raise InputError(f"{rank_list}: reference {group.reference} is not in its "
                             "manifest's sources")
        source = sources[group.reference]
        if source in held_out:
            raise InputError(f"{rank_list}: reference {group.reference} is {source}, a "
                             "validation, test or excluded photo; make the rank data from "
                             "training photos")
        for path in group.paths:
            paths.setdefault(path, None)
            references[path] = source
    return list(paths), [references[p] for p in paths], groups


def teach(data_cfg, output_dir, model=None, extra_views=2, exclude_files=(), folds=5, seed=0,
          alphas=ProbeConfig.alphas, rank_list=None, device="auto", log=print):
    """Writes `output_dir`/teacher.csv and teach.json (see the module docstring); resumes
    the feature shards a killed run left. Returns teach.json's content.

    Raises:
      InputError: the folder holds a run planned otherwise, the teacher has no pooled
        features or no pyramid views, too few photos for the folds, a rank reference that
        is a held-out photo.
    """
    photos, held_out = training_photos(data_cfg, exclude_files)
    if len(photos) < 2 * folds:
        raise InputError(f"{len(photos)} training photos are too few for {folds} folds")
    rank = rank_images(rank_list, held_out) if rank_list else None
    started = time.monotonic()
    with rundir.locked(output_dir, "teach", log):
        scorer = scoring.load_scorer(model, device=device, normalised=True)
        with scorer:
            if scorer.features is None:
                raise InputError(f"the teacher {scorer.model.ref or model} exposes no pooled "
                                 "features; teach with a model whose head is linear on them")
            own = scorer.views
            if own.mode != "pyramid" and own.count > 1:
                raise InputError(f"teach places the teacher's own views as a pyramid; its views "
                                 f"are {own.describe()}")
            specs = [view_specs(own.count, extra_views, seed, k) for k in range(len(photos))]
            plan = {"model": scorer.model.description.get("ref") or model, "views": own.as_dict(),
                    "extra_views": extra_views, "seed": seed,
                    "photos": [it.path for it in photos]}
            _check_plan(output_dir, plan)
            features = _features(scorer, [it.path for it in photos], specs, own.crop,
                                 output_dir, log)
            if rank:
                # the teacher's own views only: what it judges a distorted copy by
                rank_specs = [view_specs(own.count, 0, seed, 0)] * len(rank[0])
                _check_plan(output_dir, {"rank_list": os.path.abspath(rank_list),
                                         "images": rank[0]}, RANK_PLAN_NAME)
                rank_features = _features(scorer, rank[0], rank_specs, own.crop, output_dir,
                                          log, prefix="rank", what="rank images")
        log(f"teach: cross-fitting {folds} heads on {len(photos)} photos x {own.count} own views")
        scores, fold, report, heads = cross_fit(features, np.array([it.score for it in photos]),
                                                own.count, folds, seed, alphas)
    rows = [(item.path, v, spec, scores[k, v], fold[k])
            for k, item in enumerate(photos) for v, spec in enumerate(specs[k])]
    if rank:
        rank_fold = _reference_folds(rank[1], photos, fold, folds)
        rank_scores = np.stack([_head_scores(heads[f], x) for f, x in zip(rank_fold, rank_features)])
        rows += [(path, v, spec, rank_scores[k, v], rank_fold[k])
                 for k, path in enumerate(rank[0]) for v, spec in enumerate(rank_specs[k])]
        report["rank"] = dict(rank_list=os.path.abspath(rank_list), images=len(rank[0]),
                              **ladder_accuracy(rank[2], dict(zip(rank[0], rank_scores.mean(1)))))
    report.update(plan={k: v for k, v in plan.items() if k != "photos"}, photos=len(photos),
                  rows=len(rows), seconds=round(time.monotonic() - started, 1))
    write_table(output_dir, rows, report, log)
    return report


def write_table(output_dir, rows, report, log):
    """teacher.csv from `rows` ``(path, view, spec, score, fold)`` and teach.json from
    `report`, each written aside and moved into place; one line each says what they hold."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    for path, v, spec, score, k in rows:
        writer.writerow([path, v, *spec, f"{score:.6f}", int(k)])
    rundir.write_atomic(os.path.join(output_dir, TABLE_NAME), buffer.getvalue())
    rundir.write_json_atomic(os.path.join(output_dir, REPORT_NAME), report)
    log(f"teach: {report['rows']} views of {report['photos']} photos scored by heads that never "
        f"saw them (out-of-fold srocc {report['oof_srocc']:.4f}, plcc {report['oof_plcc']:.4f} "
        f"on own views) -> {os.path.join(output_dir, TABLE_NAME)}")
    if "rank" in report:
        log(f"teach: {report['rank']['images']} rank images scored by the heads of their "
            f"references' folds (out-of-fold ladder pair accuracy "
            f"{report['rank']['pair_accuracy']:.3f})")


def _reference_folds(references, photos, fold, folds):
    """The fold of each rank image: its reference photo's when that is a training photo (its
    head never saw the photo), else (a photo outside the labelled set, e.g. Kodak) one by the
    reference's order, any head being out of sample for it."""
    by_photo = {os.path.realpath(it.path): int(fold[k]) for k, it in enumerate(photos)}
    outside = {}
    for ref in references:
        if ref not in by_photo:
            outside.setdefault(ref, len(outside) % folds)
    return np.array([by_photo.get(ref, outside.get(ref)) for ref in references])


def ladder_accuracy(groups, scores):
    """``{"pair_accuracy", "families": {family: pair_accuracy}}`` of the rank groups under
    `scores` (``{path: score}``), counted as every pair accuracy is (`metrics.pair_accuracy`)."""
    rows = {}
    for group in groups:
        rows.setdefault(group.distortion, []).append([scores[p] for p in group.paths])
    return {"pair_accuracy": metrics.pair_accuracy([r for family in rows.values() for r in family]),
            "families": {k: metrics.pair_accuracy(v) for k, v in rows.items()}}


def _check_plan(output_dir, plan, name=PLAN_NAME):
    """A folder holds one plan: resuming under another would mix two teachers' features."""
    path = os.path.join(output_dir, name)
    if os.path.exists(path):
        old = rundir.read_json(path)
        changed = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
        if changed:
            raise InputError(f"{output_dir} holds a teach run planned with other "
                             f"{', '.join(changed)}; choose another --output-dir")
    else:
        rundir.write_json_atomic(path, plan)


def _features(scorer, paths, specs, crop, output_dir, log, prefix="photos", what="photos"):
    """``[images, views, d]`` float32: the teacher's pooled features of each view, from shards
    of `SHARD_PHOTOS` images, each written whole."""
    folder = os.path.join(output_dir, FEATURES_DIR)
    os.makedirs(folder, exist_ok=True)
    starts = list(range(0, len(paths), SHARD_PHOTOS))
    todo = [s for s in starts if not os.path.exists(_shard_path(folder, s, prefix))]
    if len(todo) < len(starts):
        log(f"teach: resuming: {len(starts) - len(todo)} of {len(starts)} feature shards of "
            f"{what} done")
    total = sum(min(SHARD_PHOTOS, len(paths) - s) for s in todo)
    bar = Progress(f"teach: features of {what}", total, lambda line, end: log(line))
    bar.update(0)
    done = 0
    for start in todo:  # each photo's views placed by its own specs, scored as any photo is
        chunk = range(start, min(start + SHARD_PHOTOS, len(paths)))
        items = [views_lib.Viewed(paths[k], views_lib.PlacedViews(crop, tuple(specs[k])))
                 for k in chunk]
        shard = scorer.values(items, items[0].views, tensor="features")  # [photos, views, d]
        with rundir.writing(_shard_path(folder, start, prefix)) as tmp:
            np.save(tmp, shard)
        done += len(chunk)
        bar.update(done)
    return np.concatenate([np.load(_shard_path(folder, s, prefix))
                           for s in starts]).astype(np.float32)


def _shard_path(folder, start, prefix):
    return os.path.join(folder, f"{prefix}-{start:06d}.npy")


def cross_fit(features, targets, own, folds, seed, alphas):
    """Out-of-fold scores of every view.

    Args:
      features: ``[photos, views, d]``; the first `own` views of each photo are the teacher's
        own (the rows its heads are fitted on, each with the photo's score).
      targets: ``[photos]`` normalised scores.
      alphas: ridge penalties, chosen per fold by cross-validation; one: that one.

    Returns:
      (scores ``[photos, views]``, fold ``[photos]``, report: alpha per fold and the
      out-of-fold SROCC/PLCC of each photo's mean own-view score, the heads: fold k's head
      never saw fold k's photos).
    """
    n, views, d = features.shape
    fold = np.random.default_rng(seed).permutation(n) % folds
    scores = np.zeros((n, views))
    heads = []
    for k in range(folds):
        fit_rows = fold != k
        x = features[fit_rows, :own].reshape(-1, d)
        y = np.repeat(targets[fit_rows], own)
        fit = (probe.fit_ridge_at(x, y, alphas[0]) if len(alphas) == 1 else probe.fit_ridge(
            x, y, alphas, folds, seed=seed, groups=np.repeat(np.arange(fit_rows.sum()), own)))
        scores[~fit_rows] = _head_scores(fit, features[~fit_rows])
        heads.append(fit)
    summary = metrics.summary(scores[:, :own].mean(axis=1), targets)
    return scores, fold, {"folds": folds, "alphas": [h["alpha"] for h in heads],
                          "oof_srocc": summary["srocc"], "oof_plcc": summary["plcc"]}, heads


def _head_scores(head, features):
    """A ridge head's scores of ``features [..., d]``: shape ``[...]``."""
    return ((features - head["mean"]) / head["std"]) @ head["weights"] + head["bias"]

