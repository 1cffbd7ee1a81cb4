"""Few labels of your own on a shipped model: calibrate it or move its head toward your labels,
whichever cross-validation over all your labels says, or fit a fresh head (`rankiqa calibrate`).

With a hundred labels a head refitted from scratch throws away one fitted on thousands: a user's
120 labels on a 1-5 scale gave held-out SROCC 0.49-0.59 by every fresh-head path against 0.79-0.84
for the built-in models, whose score mapped linearly onto the labels also had the lower error.
So every arm here starts from the model's own score s and its pooled features x (a photo's mean
over its views; the head is linear, so the model's score is the head of that mean):

- ``calibrate``: ``a * s + c``, least squares (the order of the photos is the model's own);
- ``centred``: ``a * s + c + w . z``, z the standardised features, a and c unpenalised and w
  ridge, its alpha by leave-one-out error: a head regularised toward the source head (scaled by
  a), which a large alpha turns back into calibration;
- ``fresh``: ``c + w . z``, ridge on the labels alone (what a from-scratch probe fits).

`choose` runs repeated k-fold cross-validation over all labels, keeps the simpler of calibrate
and centred unless the other's cross-validated SROCC is more than `TIE` higher (`AUTO_ARMS`: why
not fresh), and the chosen arm is refitted on every label. Each arm
is linear in x, so it folds into the network's one-output head (`folded_head`): the adapted
model is an ordinary run folder that `predict`, `evaluate`, `serve` and the exports take.
The leave-one-kind-out study (docs/label-efficiency.md) measures the arms and the choice.
"""

import dataclasses
import json
from typing import Optional

import numpy as np

from rankiqa import metrics
from rankiqa.errors import InputError

ARMS = ("calibrate", "centred", "fresh")  # simplest first: a tie goes to the earlier
# what auto chooses among. The centred head holds the fresh one (its free weight on the model's
# score can go to zero), and in the leave-one-kind-out study fresh was never better than
# centred up to 400 labels, while picking it on a lucky cross-validation cost up to 0.035
# SROCC (25 labels of ss02); its cross-validated figure is still reported
AUTO_ARMS = ("calibrate", "centred")
# within this of the best cross-validated SROCC, the simpler arm is kept: differences this
# small are inside what repeated folds of a hundred labels can tell apart
TIE = 0.005
# ridge penalties, times the feature count (standardised features: the penalty's useful range
# scales with d); the largest leaves the head all but where it started
ALPHA_GRID = tuple(np.logspace(-3, 4, 15))
MIN_LABELS = {"calibrate": 3, "centred": 10, "fresh": 10}
MIN_PER_FOLD = 3  # a held-out fold's SROCC needs three photos to mean anything
STAGE = "adapt"  # rankiqa.json's stage of an adapted model


@dataclasses.dataclass(frozen=True)
class LinearFit:
    """``a * s + c + ((x - mean) / std) . w``: one arm fitted (w zero for calibration)."""

    arm: str
    a: float
    c: float
    mean: np.ndarray
    std: np.ndarray
    w: np.ndarray
    alpha: Optional[float] = None

    def predict(self, x, s):
        return self.a * np.asarray(s) + self.c + ((np.asarray(x) - self.mean) / self.std) @ self.w


def _calibration(s, y):
    """(a, c) of the least-squares line y ~ a s + c; a constant score maps to the labels' mean."""
    s, y = np.asarray(s, np.float64), np.asarray(y, np.float64)
    if np.ptp(s) == 0:
        return 0.0, float(y.mean())
    a, c = np.polyfit(s, y, 1)
    return float(a), float(c)


def ridge_loo(z, r, alphas, fixed=None):
    """Ridge of `r` on `z` with unpenalised columns (an intercept, and `fixed` ``[n, k]`` where
    given), its alpha by exact leave-one-out squared error: the penalised part is ridge on
    what the unpenalised columns leave of `z` and `r` (Frisch-Waugh-Lovell), one thin SVD serves
    every alpha, and the hat matrix's diagonal adds their projection's.

    Returns (w ``[d]``, alpha, beta): beta the coefficients of ``[1, *fixed]``."""
    n = len(r)
    s = np.ones((n, 1)) if fixed is None else np.column_stack([np.ones(n), fixed])
    q, _ = np.linalg.qr(s)
    zc, rc = z - q @ (q.T @ z), r - q @ (q.T @ r)
    u, sv, vt = np.linalg.svd(zc, full_matrices=False)
    ur, base = u.T @ rc, np.sum(q ** 2, axis=1)
    best = None
    for alpha in alphas:
        shrink = sv ** 2 / (sv ** 2 + alpha)
        loo = (rc - u @ (shrink * ur)) / np.maximum(1.0 - (u ** 2) @ shrink - base, 1e-9)
        error = float(np.mean(loo ** 2))
        if best is None or error < best[0]:
            best = (error, alpha, shrink)
    _, alpha, shrink = best
    w = vt.T @ (shrink / np.where(sv > 0, sv, 1.0) * ur)
    beta = np.linalg.lstsq(s, r - z @ w, rcond=None)[0]
    return w, float(alpha), beta


def fit_arm(arm, x, s, y):
    """One arm (`ARMS`) fitted on features `x` ``[n, d]``, source scores `s` and labels `y`."""
    x, s, y = (np.asarray(v, np.float64) for v in (x, s, y))
    if arm not in ARMS:
        raise InputError(f"unknown head {arm!r}; choose from {list(ARMS)} or auto")
    if len(y) < MIN_LABELS[arm]:
        raise InputError(f"{len(y)} labelled photos are too few for the {arm} head (it needs "
                         f"{MIN_LABELS[arm]})")
    mean, std = x.mean(0), x.std(0) + 1e-8
    zero = np.zeros(x.shape[1])
    if arm == "calibrate":
        return LinearFit(arm, *_calibration(s, y), mean, std, zero)
    alphas = [a * x.shape[1] for a in ALPHA_GRID]
    z = (x - mean) / std
    if arm == "centred":  # the source's score and an intercept unpenalised, the rest ridge
        w, alpha, (c, a) = ridge_loo(z, y, alphas, fixed=s[:, None])
        return LinearFit(arm, float(a), float(c), mean, std, w, alpha)
    w, alpha, (c,) = ridge_loo(z, y, alphas)
    return LinearFit(arm, 0.0, float(c), mean, std, w, alpha)


def cross_validate(x, s, y, arms=ARMS, folds=5, repeats=3, seed=0):
    """Each arm's figures on held-out folds over `repeats` seeded `folds`-fold splits of all
    labels: each fold's photos scored by the arm fitted on the others, figures within the fold,
    averaged over every fold of every repeat. (Pooling the folds' predictions first would charge
    each arm for the offsets between its folds' fits, which the one final fit does not have:
    calibration pooled so ranked 24 photos at 0.13 where the model itself ranks them at 0.32.)

    Returns ``{arm: {"srocc", "srocc_sd", "srocc_ci", "plcc", "rmse"}}``: the means, the spread
    between folds, and the 95 % interval of the mean SROCC over the n labelled photos
    (`rankiqa.metrics.interval`)."""
    x, s, y = (np.asarray(v, np.float64) for v in (x, s, y))
    n = len(y)
    if n < MIN_PER_FOLD * folds:
        raise InputError(f"{n} labelled photos are too few for {folds}-fold cross-validation "
                         f"(it needs {MIN_PER_FOLD * folds}: {MIN_PER_FOLD} a fold)")
    figures = {arm: {"srocc": [], "plcc": [], "rmse": []} for arm in arms}
    for repeat in range(repeats):
        fold = np.random.default_rng(seed + repeat).permutation(n) % folds
        for k in range(folds):
            train, test = fold != k, fold == k
            for arm in arms:
                predicted = fit_arm(arm, x[train], s[train], y[train]).predict(x[test], s[test])
                f = figures[arm]
                f["srocc"].append(metrics.srocc(predicted, y[test]))
                f["plcc"].append(metrics.plcc(predicted, y[test]))
                f["rmse"].append(metrics.rmse(predicted, y[test]))
    out = {}
    for arm, f in figures.items():
        srocc = float(np.nanmean(f["srocc"]))  # a fold of tied labels has none
        out[arm] = {"srocc": srocc, "srocc_sd": float(np.nanstd(f["srocc"])),
                    "srocc_by_fold": [float(v) for v in f["srocc"]],
                    "srocc_ci": metrics.interval(srocc, n, spearman=True),
                    "plcc": float(np.nanmean(f["plcc"])), "rmse": float(np.mean(f["rmse"]))}
    return out


def pick(cv, arms=ARMS):
    """The simplest arm whose cross-validated SROCC is within `TIE` of the best."""
    best = max(cv[arm]["srocc"] for arm in arms if arm in cv)
    return next(arm for arm in arms if arm in cv and cv[arm]["srocc"] >= best - TIE)


def choose(x, s, y, head="auto", folds=5, repeats=3, seed=0):
    """The arm `head` names (auto: `pick` over the arms the labels allow), refitted on every
    label, and the report: ``{"head", "chosen_by", "labels", "cv", "zero_shot"}``."""
    y = np.asarray(y, np.float64)
    n = len(y)
    if head != "auto" and head not in ARMS:
        raise InputError(f"unknown head {head!r}; choose from {['auto', *ARMS]}")
    allowed = [arm for arm in ARMS if n >= MIN_LABELS[arm]]
    candidates = [arm for arm in AUTO_ARMS if arm in allowed]
    if head == "auto" and n < MIN_PER_FOLD * folds:
        raise InputError(f"{n} labelled photos are too few to choose a head by {folds}-fold "
                         f"cross-validation (it needs {MIN_PER_FOLD * folds}); --head calibrate "
                         f"needs {MIN_LABELS['calibrate']}")
    report = {"labels": n, "zero_shot": {"srocc": metrics.srocc(s, y), "plcc": metrics.plcc(s, y)},
              "folds": folds, "repeats": repeats}
    if n >= MIN_PER_FOLD * folds:
        report["cv"] = cross_validate(x, s, y, allowed if head == "auto" else [head], folds,
                                      repeats, seed)
    chosen = pick(report["cv"], candidates) if head == "auto" else head
    report.update(head=chosen, chosen_by="cross-validation" if head == "auto" else "--head")
    fit = fit_arm(chosen, x, s, y)
    return fit, report


def describe(report):
    """The lines a user reads: what was chosen, on what evidence."""
    lines = [f"{report['labels']} labelled photos; the model as it is: srocc "
             f"{report['zero_shot']['srocc']:.4f}, plcc {report['zero_shot']['plcc']:.4f}"]
    for arm, f in (report.get("cv") or {}).items():
        aside = " (not chosen by auto: centred holds it)" if (
            arm not in AUTO_ARMS and report["chosen_by"] == "cross-validation") else ""
        lines.append(f"  {arm:<9} cross-validated srocc {f['srocc']:.4f}"
                     f"{metrics.describe_interval(f['srocc_ci'])} plcc {f['plcc']:.4f} (mean "
                     f"of {report['repeats']} x {report['folds']} held-out folds; sd between "
                     f"folds {f['srocc_sd']:.3f}){aside}")
    why = "as asked"
    if report["chosen_by"] == "cross-validation":
        cv = {arm: f for arm, f in report["cv"].items() if arm in AUTO_ARMS}
        best = max(cv, key=lambda arm: cv[arm]["srocc"])
        why = ("the best cross-validated srocc" if best == report["head"] else
               f"within {TIE} of {best}'s cross-validated srocc, and simpler")
    figure = chosen_figure(report)
    lines.append(f"head: {report['head']} ({why}), refitted on all {report['labels']} labels"
                 f"{'; ' + figure if figure else ''}")
    return lines


def chosen_figure(report):
    """``cross-validated srocc 0.8778 [0.83, 0.91]`` of the chosen head; "" without one."""
    chosen = (report.get("cv") or {}).get(report["head"])
    if not chosen:
        return ""
    return (f"cross-validated srocc {chosen['srocc']:.4f}"
            f"{metrics.describe_interval(chosen['srocc_ci'])}")


# --------------------------------------------------------------------------- the network's head


def linear_head(values, epsilon):
    """(K ``[d]``, B) with the head's score = K . features + B, from the head's variable values
    ``{suffix: array}`` (``weights``, ``biases``, and a normalising head's batch-norm
    ``moving_mean``, ``moving_variance``, ``beta``)."""
    w = np.asarray(values["weights"], np.float64).reshape(-1)
    b = float(np.asarray(values["biases"]).reshape(-1)[0])
    if "moving_mean" not in values:
        return w, b
    divisor = np.sqrt(np.asarray(values["moving_variance"], np.float64) + epsilon)
    shift = np.asarray(values.get("beta", 0.0), np.float64) * divisor
    kernel = w * np.asarray(values.get("gamma", 1.0), np.float64) / divisor
    return kernel, b + float(kernel @ (shift - np.asarray(values["moving_mean"], np.float64)))


def folded_head(fit, source_kernel, source_bias, names, epsilon):
    """``{suffix: array}`` that makes the head compute `fit` on the raw features, given the
    source head's (K, B) (`linear_head`) and the head's variable suffixes `names`."""
    kernel = fit.a * source_kernel + fit.w / fit.std
    bias = fit.a * source_bias + fit.c - float((fit.w / fit.std) @ fit.mean)
    values = {"weights": kernel, "biases": np.array([bias])}
    if "moving_mean" in names:  # the normalisation made the identity: the kernel says it all
        d = len(kernel)
        values.update(moving_mean=np.zeros(d), moving_variance=np.full(d, 1.0 - epsilon),
                      beta=np.zeros(d))
        if "gamma" in names:
            values["gamma"] = np.ones(d)
    return values


def source_scores(x, kernel, bias):
    return np.asarray(x, np.float64) @ kernel + bias


def run_info(source_info, model, data_config, report, labels_record):
    """The adapted model's ``rankiqa.json``: the source's network and views, the labels' scale
    (``config.data``, read by `rankiqa.serve.scales.of_model`), and what was chosen."""
    from rankiqa.config import to_dict

    config = {"data": to_dict(data_config),
              "net": {"pooled_blocks": ((source_info.get("config") or {}).get("net") or {})
                      .get("pooled_blocks") or []}}
    return {"stage": STAGE, "net": source_info["net"], "crop_size": source_info.get("crop_size"),
            "views": source_info.get("views"), "source": model, "config": config,
            "adapt": report, "labels": labels_record}


def adapt(model, items, data_config, out_dir, label_file, head="auto", folds=5, repeats=3,
          seed=0, device="auto", log=print, progress=None, extra_info=None):
    """Adapts `model` to `items` (`rankiqa.data.mos.ScoredImage`, normalised scores) and writes
    the adapted model to `out_dir` (a run folder; `extra_info` joins its ``rankiqa.json``).
    Returns the report."""
    from rankiqa import nets
    from rankiqa.compat import slim, tf
    from rankiqa.data import mos
    from rankiqa.run import rundir
    from rankiqa.serve.scoring import load_scorer
    from rankiqa.train.probe import BN_EPSILON
    from rankiqa.weights import restore

    y = np.array([it.score for it in items])
    with load_scorer(model, device=device, normalised=True) as scorer:
        if scorer.features is None:
            raise InputError(f"{model}: its network ({scorer.model.net}) exposes no pooled "
                             "features, so its head cannot be adapted")
        log(f"features of {len(items)} labelled photos x {scorer.views.describe()}")
        x = scorer.values([it.path for it in items], tensor="features", progress=progress)
        x = x.reshape(len(items), -1, x.shape[-1]).mean(axis=1)  # a photo: its views' mean
        with scorer.graph.as_default():
            head_scope = nets.get_network_fn(scorer.model.net).head_scope
            variables = {v.op.name.rsplit("/", 1)[-1]: v
                         for v in slim.get_model_variables(scope=head_scope)}
            every = tf.global_variables()  # what the scorer restored: the whole model
        # the whole model once: the head's values come from it, and it is what gets written
        arrays = scorer.session.run({v.op.name: v for v in every})
        kernel, bias = linear_head({k: arrays[v.op.name] for k, v in variables.items()},
                                   BN_EPSILON)
        s = source_scores(x, kernel, bias)
        fit, report = choose(x, s, y, head, folds, repeats, seed)
        report["fit"] = {"a": fit.a, "c": fit.c, "alpha": fit.alpha}
        for line in describe(report):
            log(line)
        for suffix, value in folded_head(fit, kernel, bias, set(variables), BN_EPSILON).items():
            name = variables[suffix].op.name
            arrays[name] = value.reshape(arrays[name].shape).astype(arrays[name].dtype)
    info = {**run_info(scorer.model.description, model, data_config, report,
                       mos.label_record(label_file, out_dir)), **(extra_info or {})}
    restore.write_checkpoint(arrays, out_dir, {rundir.RUN_INFO_NAME: json.dumps(
        rundir.finite_or_null(info), indent=2, sort_keys=True).encode()})
    log(f"adapted model -> {out_dir}")
    return report
