"""`rankiqa evaluate`: score a dataset split the way papers do and write the evidence.

Writes to the output folder: ``summary.json`` (SROCC, KROCC, PLCC raw and after the
four-parameter logistic, RMSE; overall and per distortion; for mean-aggregated views, and
median-aggregated ones where there are more than two views, since the median of two is their
mean), ``predictions.csv`` (one row per image: the prediction on the model's scale and
normalised) and ``scatter.png`` (normalised prediction against normalised MOS).
"""

import csv
import os

import numpy as np

from rankiqa import metrics
from rankiqa.run import rundir
from rankiqa.serve import scales, scoring
from rankiqa.data import mos
from rankiqa.errors import InputError


def select_split(data_cfg, split):
    """The items of `split` (one of `mos.SPLITS`) of the configured dataset."""
    if split not in mos.SPLITS:
        raise InputError(f"unknown split {split!r}; choose from {list(mos.SPLITS)}")
    chosen = mos.load_splits(data_cfg)[split]
    if not chosen:
        raise InputError(f"split {split!r} is empty (data.val_fraction={data_cfg.val_fraction}, "
                         f"data.test_fraction={data_cfg.test_fraction})")
    return chosen


def scatter_png(path, predicted, target, title, groups=None):
    """Predicted score (x) against normalised MOS (y), 720x640 px: ticks in score units, the
    identity line, the four-parameter logistic fitted for PLCC, one colour per distortion
    (`groups`, one label or None per point) where the dataset names them."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    from matplotlib.figure import Figure

    predicted, target = np.asarray(predicted, float), np.asarray(target, float)
    fig = Figure(figsize=(7.2, 6.4), dpi=100)
    ax = fig.add_subplot()
    labels = sorted({g for g in groups if g}) if groups is not None else []
    if labels and len(labels) <= 20:  # beyond 20 colours a legend says nothing
        cmap = matplotlib.colormaps["tab20" if len(labels) > 10 else "tab10"]
        for k, label in enumerate(labels):
            rows = [i for i, g in enumerate(groups) if g == label]
            ax.scatter(predicted[rows], target[rows], s=12, alpha=0.7, color=cmap(k),
                       label=label, linewidths=0)
    else:
        ax.scatter(predicted, target, s=12, alpha=0.6, color="tab:blue", linewidths=0)
    curve = np.linspace(predicted.min(), predicted.max(), 200)
    ax.plot(curve, metrics.fit_logistic4(predicted, target, at=curve), color="black",
            linewidth=1.5, label="logistic fit (PLCC after mapping)")
    low = min(predicted.min(), target.min())
    high = max(predicted.max(), target.max())
    ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="y = x")
    ax.margins(0.05)
    ax.set_xlabel("predicted score")
    ax.set_ylabel("MOS, normalised to [0, 1] (higher is better)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", markerscale=1.5)
    fig.tight_layout()
    fig.savefig(path, format="png")


EVIDENCE = ("summary.json", "predictions.csv", "scatter.png")  # what evaluate writes


def evaluate(data_cfg, model, output_dir, views, split="val", aggregate="mean",
             batch_size=64, device="auto", log=print, precision="fp32", progress=None,
             force=False, normalised=False, engine="tensorflow"):
    """Scores `split` of the dataset `data_cfg` describes with `model` (a training directory or
    checkpoint prefix), each image by the mean (or median) of its `views`
    (`rankiqa.preprocessing.views.Views`, or a function from the model's own views to those to use;
    random views drawn from `rankiqa.preprocessing.views.VIEW_SEED`, as every command draws them).

    progress: optional ``progress(done, total)``, called after each batch of images.
    force: replace an earlier evaluation's files in `output_dir` (never the label file or an
      image being scored, which are refused).
    engine: what runs the network (`rankiqa.serve.scoring.load_scorer`); TensorFlow by default,
      the engine every published figure was measured with.
    normalised: predictions.csv's ``predicted`` in [0, 1], higher better; default: on the
      model's labels' scale (`rankiqa.serve.scales`). The figures always compare normalised scores
      (``predicted_normalised`` against ``mos``), so that a model trained on DMOS 0-100 and one
      trained on MOS 1-5 are measured alike.

    Returns:
      the summary dict, also written to ``output_dir/summary.json``.
    """
    if aggregate not in scoring.AGGREGATES:
        raise InputError(f"unknown aggregate {aggregate!r}; choose from {list(scoring.AGGREGATES)}")
    items = select_split(data_cfg, split)
    inputs = [data_cfg.label_file, *(it.path for it in items)]
    for name in EVIDENCE:  # before scoring, not after
        rundir.check_output(os.path.join(output_dir, name), inputs, force,
                            f"--output-dir's {name},")
    with rundir.locked(output_dir, "evaluate", log):
        with scoring.load_scorer(model, device=device, batch_size=batch_size,
                                 precision=precision, normalised=True,
                                 engine=engine) as scorer:
            views = views(scorer.views) if callable(views) else views
            log(f"scoring {len(items)} images ({split}) with {views.describe()} each")
            # an unreadable image raises: a dataset with a hole would give another set's figures
            per_view = scorer.values([it.path for it in items], views, progress=progress)
        if aggregate == "median" and views.count <= 2:
            log(f"notice: the median of {views.count} views is their mean")
            aggregate = "mean"
        summary = {"checkpoint": model, "net": scorer.model.net, "dataset": data_cfg.dataset,
                   "split": split, "crops": views.count, "crop_mode": views.mode,
                   "crop_size": views.crop, "aggregate": aggregate,
                   "precision": scorer.model.precision, "engine": scorer.model.engine,
                   "score_direction": "normalised MOS in [0, 1], higher is better",
                   "model_score_scale": scorer.model.scale.text}
        scale = scales.of_model(scorer.model.description, normalised)
        summary["predicted"] = scale.as_dict()  # what predictions.csv's `predicted` is on
        predicted = summarise(summary, items, per_view, aggregate)
        write_evidence(output_dir, summary, items, predicted,
                       f"{data_cfg.dataset} {split}, {model}", scale)
        return summary


def summarise(summary, items, per_view, aggregate):
    """Adds the figures of `per_view` scores ``[items, views]`` against the items' MOS to
    `summary`: for mean-aggregated views, median-aggregated ones where there are more than two
    views (the median of two is their mean), per distortion where the dataset names them and
    per group where it names two or more (`rankiqa.metrics.per_group`).
    Returns the scores aggregated by `aggregate`."""
    aggregated = {"mean": per_view.mean(axis=1)}
    if per_view.shape[1] > 2:
        aggregated["median"] = np.median(per_view, axis=1)
    target = np.array([it.score for it in items])
    for name, predicted in aggregated.items():
        summary[name] = metrics.summary(predicted, target)
    summary.update(summary[aggregate])
    predicted = aggregated[aggregate]
    by_group = metrics.per_group(predicted, target, [it.group for it in items])
    if by_group:  # within each kind of photo (BIQ2021's ss01-ss03, a csv's group column)
        summary["per_group"] = by_group
    distortions = sorted({it.distortion for it in items if it.distortion})
    if distortions:
        summary["per_distortion"] = {}
        for d in distortions:
            rows = [i for i, it in enumerate(items) if it.distortion == d]
            if len(rows) >= 3:
                summary["per_distortion"][d] = metrics.summary(predicted[rows], target[rows])
    return predicted


def write_evidence(output_dir, summary, items, predicted, title, scale=None):
    """``predictions.csv`` (each image named as the label file lists it, ``predicted`` on
    `scale`, a `rankiqa.serve.scales.Scale`, beside the normalised scores the figures compare),
    ``scatter.png`` and ``summary.json`` in `output_dir`, each written aside and renamed
    (`rundir.writing`)."""
    scaled = predicted if scale is None else scale.from_normalised(np.asarray(predicted))
    with rundir.writing(os.path.join(output_dir, "predictions.csv")) as tmp, \
            open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reference", "distortion", "mos", "mos_raw", "predicted",
                         "predicted_normalised", "group"])
        for it, p, normal in zip(items, scaled, predicted):
            writer.writerow([it.listed or it.path, it.reference or "", it.distortion or "",
                             f"{it.score:.6f}", it.raw, f"{p:.9g}",
                             f"{normal:.9g}",  # exact enough to recompute the metrics
                             it.group or ""])
    target = [it.score for it in items]
    with rundir.writing(os.path.join(output_dir, "scatter.png")) as tmp:
        scatter_png(tmp, predicted, target,
                    f"{title}\nSROCC {summary['srocc']:.4f}  KROCC {summary['krocc']:.4f}  "
                    f"PLCC {summary['plcc']:.4f} (logistic {summary['plcc_logistic']:.4f})  "
                    f"n={len(items)}", groups=[it.distortion for it in items])
    rundir.write_json_atomic(os.path.join(output_dir, "summary.json"),
                             rundir.finite_or_null(summary))
