"""The linear probe: a quality head fitted in closed form on frozen features, before fine-tuning.

Fine-tuning a pretrained backbone under a randomly initialised head first spends its steps
(and distorts the backbone's features) while the head finds its way; fitting the head by ridge
regression on the frozen features first and fine-tuning from there ("LP-FT", Kumar et al.,
ICLR 2022) starts the backbone from a head that already ranks well. On BIQ2021 with VGG-16 the
probe alone is the "frozen backbone" result of the README.

The head is linear in the network's pooled features (``end_points["features"]``): either
``logits(features)`` (resnet_v2, vgg_16) or ``logits(feature_norm(features))`` with a batch-norm
layer in inference mode (vgg_16_pooled). Ridge runs on standardised features; the
standardisation is then written into the batch-norm statistics, or folded into the weights.
"""

import numpy as np
from scipy import stats

from rankiqa import metrics
from rankiqa.run import rundir
from rankiqa.weights import restore
from rankiqa.errors import InputError
from rankiqa.run.progress import Progress

BN_EPSILON = 0.001  # slim.batch_norm's default epsilon, which the head uses


def _ridge(x, y, alphas):
    """Ridge weights for each alpha from one eigendecomposition of the smaller of the n x n
    Gram matrix (dual form) and the d x d covariance (primal form): the same solution, at the
    cube of the smaller side. (10,800 views x 4,240 EfficientNet features: the dual form's
    eigendecompositions took minutes each on 2 cores, the primal one seconds.)"""
    if len(x) <= x.shape[1]:
        eigval, eigvec = np.linalg.eigh(x @ x.T)
        projected = eigvec.T @ y
        return [x.T @ (eigvec @ (projected / (eigval + alpha))) for alpha in alphas]
    eigval, eigvec = np.linalg.eigh(x.T @ x)
    projected = eigvec.T @ (x.T @ y)
    return [eigvec @ (projected / (eigval + alpha)) for alpha in alphas]


def fit_ridge(features, targets, alphas, folds=5, seed=0, groups=None, standardise=True):
    """Standardised ridge regression, its alpha chosen by `folds`-fold cross-validated SROCC.

    Args:
      features: ``[n, d]`` (one row per view; several rows may share an image).
      targets: ``[n]`` quality scores.
      alphas: candidate L2 penalties.
      groups: ``[n]`` image ids, so that the views of one image stay in one fold.
      standardise: scale each feature to unit variance first (False: centre only, for features
        already on one scale, such as principal components, whose spread is the signal).

    Returns:
      dict: ``mean``, ``std`` (``[d]``), ``weights`` (``[d]``, on standardised features),
      ``bias``, ``alpha`` and ``cv_srocc`` (per alpha, over per-group mean predictions).
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(targets, np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise InputError(f"features {x.shape} and targets {y.shape} do not pair up")
    if not alphas or min(alphas) <= 0:
        raise InputError(f"ridge alphas must be positive, got {list(alphas)}")
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    unique = np.unique(groups)
    if len(unique) < 2 * folds:
        raise InputError(f"{len(unique)} images are too few for {folds}-fold cross-validation")
    fold_of = dict(zip(unique, np.random.default_rng(seed).permutation(len(unique)) % folds))
    fold = np.array([fold_of[g] for g in groups])
    predictions = np.zeros((len(alphas), len(y)))
    def scale(rows):
        return rows.mean(0), (rows.std(0) + 1e-8 if standardise else np.ones(x.shape[1]))

    for k in range(folds):
        tr, te = fold != k, fold == k
        mean, std = scale(x[tr])
        xt = (x[tr] - mean) / std
        for a, w in enumerate(_ridge(xt, y[tr] - y[tr].mean(), alphas)):
            predictions[a, te] = ((x[te] - mean) / std) @ w + y[tr].mean()
    cv = []
    for a in range(len(alphas)):
        per_group = [predictions[a, groups == g].mean() for g in unique]
        per_target = [y[groups == g].mean() for g in unique]
        cv.append(float(stats.spearmanr(per_group, per_target)[0]))
    best = int(np.argmax(cv))
    mean, std = scale(x)
    (weights,) = _ridge((x - mean) / std, y - y.mean(), [alphas[best]])
    return {"mean": mean, "std": std, "weights": weights, "bias": float(y.mean()),
            "alpha": float(alphas[best]), "cv_srocc": dict(zip(map(float, alphas), cv))}


def fit_ridge_at(features, targets, alpha):
    """`fit_ridge`'s final fit for one given `alpha`, without cross-validation: one linear
    solve of the primal system instead of eigendecompositions (6,544 combined features:
    seconds against minutes per fold). Returns the same keys but ``cv_srocc``."""
    x = np.asarray(features, np.float64)
    y = np.asarray(targets, np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-8
    xt = (x - mean) / std
    weights = np.linalg.solve(xt.T @ xt + alpha * np.eye(x.shape[1]), xt.T @ (y - y.mean()))
    return {"mean": mean, "std": std, "weights": weights, "bias": float(y.mean()),
            "alpha": float(alpha)}


def weight_for_labels(labelled):
    """The ranking-aware probe's weight for `labelled` training photos: ``3 * (100 / N)^1.5``
    within [0.1, 30] (24 at 25, 8.5 at 50, 3 at 100, 1.1 at 200, 0.38 at 400, 0.13 at 800).
    The label-efficiency study (docs/label-efficiency.md) found the validation-SROCC-best
    weight falling this way: 30 at 25 labelled photos, 10 at 50, 3 at 100, 1 at 200, 0.1-0.3
    from 400."""
    if labelled < 1:
        raise InputError("the ranking weight's rule needs at least one labelled photo")
    return float(np.clip(3.0 * (100.0 / labelled) ** 1.5, 0.1, 30.0))


def ranking_pairs(group_features):
    """``[pairs, d]`` differences (cleaner minus more distorted) of every level pair of every
    group, from ``[groups, levels, d]`` features (level 0 the reference)."""
    g = np.asarray(group_features, np.float64)
    i, j = np.triu_indices(g.shape[1], k=1)
    return (g[:, i] - g[:, j]).reshape(-1, g.shape[2])


def fit_ranked(features, targets, group_features, fit, weight, margin, max_iterations=30):
    """The ridge head refitted so that it also orders synthetic distortions (a ranking-aware
    probe): on the standardisation of `fit` (`fit_ridge`'s) and at its alpha, minimises

        sum_rows (w.z - y)^2  +  weight * rows/pairs * sum_pairs max(0, margin - w.d)^2
        +  alpha * |w|^2

    where d is the standardised feature difference of a cleaner and a more distorted copy of one
    reference (`ranking_pairs`: every level pair of every group). `weight` is the mean squared
    hinge's weight against the mean squared error, as `signals.rank_weight` is fine-tuning's.
    The squared hinge keeps the problem convex and piecewise quadratic: Newton steps on the
    active pairs (those inside the margin), each one d x d solve, with a backtracking line
    search, end when the active set stops changing (Keerthi & DeCoste, JMLR 2005).

    Args:
      features: ``[rows, d]`` the training rows `fit` was fitted on.
      targets: ``[rows]``.
      group_features: ``[groups, levels, d]`` features of rank groups (mean over views).
      fit: `fit_ridge`'s result; its ``mean``, ``std``, ``bias`` and ``alpha`` are kept.
      weight, margin: the ranking term's weight and margin (score units).

    Returns:
      a copy of `fit` with new ``weights`` and ``rank``: pair accuracy on the groups before and
      after, the active pairs and the iterations.
    """
    if weight <= 0 or margin < 0:
        raise InputError(f"the ranking probe needs a positive weight and a margin >= 0, got "
                         f"{weight} and {margin}")
    x = (np.asarray(features, np.float64) - fit["mean"]) / fit["std"]
    y = np.asarray(targets, np.float64) - fit["bias"]
    d = ranking_pairs(np.asarray(group_features, np.float64) / fit["std"])
    if len(d) == 0:
        raise InputError("the ranking probe needs groups of at least two levels")
    before = metrics.ordered_share(d @ fit["weights"])
    w, iterations = _newton_on_active_pairs(x, y, d, fit["weights"], fit["alpha"],
                                            weight * len(x) / len(d), margin, max_iterations)
    result = dict(fit, weights=w)
    result["rank"] = {"weight": float(weight), "margin": float(margin), "pairs": int(len(d)),
                      "pair_accuracy_before": before,
                      "pair_accuracy": metrics.ordered_share(d @ w),
                      "active_pairs": int(np.sum(d @ w < margin)), "iterations": iterations}
    return result


def _newton_on_active_pairs(x, y, d, w, alpha, c, margin, max_iterations):
    """`fit_ranked`'s minimisation from `w`, `c` the hinge's weight per pair: (w, iterations)."""
    gram = x.T @ x + alpha * np.eye(x.shape[1])
    xty = x.T @ y

    def objective(w):
        hinge = np.maximum(0.0, margin - d @ w)
        return np.sum((x @ w - y) ** 2) + c * np.sum(hinge ** 2) + alpha * np.sum(w ** 2)

    active, iterations = None, 0
    for iterations in range(1, max_iterations + 1):
        now = d @ w < margin
        if active is not None and np.array_equal(now, active):
            break
        active = now
        da = d[active]
        step = np.linalg.solve(gram + c * da.T @ da, xty + c * margin * da.sum(0)) - w
        current, t = objective(w), 1.0
        while t > 1e-4 and objective(w + t * step) > current:
            t /= 2
        w = w + t * step
    return w, iterations


def head_values(fit, head_variables):
    """``{variable name: array}`` that makes the head compute the ridge fit.

    Args:
      fit: `fit_ridge`'s result.
      head_variables: ``{name suffix: tf.Variable}`` for ``weights``, ``biases`` and, when the
        head normalises its input, ``moving_mean``, ``moving_variance`` and ``beta``.
    """
    mean, std, w = fit["mean"], fit["std"], fit["weights"]
    values = {}
    if "moving_mean" in head_variables:
        # the head's batch norm divides by sqrt(moving_variance + epsilon): std exactly when
        # std^2 > epsilon; a feature with a smaller spread (1,116 of the 6,544 combined
        # features, std down to 0.002) is divided by more than its std, so its weight makes up
        # the difference (without it, those features were down-weighted by up to 16x, which
        # cost 0.009 validation SROCC on the combined probe)
        variance = std ** 2 - BN_EPSILON
        held = variance >= 1e-8
        values["moving_mean"] = mean
        values["moving_variance"] = np.where(held, variance, 1e-8)
        values["beta"] = np.zeros_like(mean)
        divisor = np.sqrt(values["moving_variance"] + BN_EPSILON)
        kernel, bias = np.where(held, w, w * divisor / std), fit["bias"]
    else:  # fold the standardisation into the linear layer
        kernel = w / std
        bias = fit["bias"] - float(np.dot(kernel, mean))
    shape = head_variables["weights"].shape.as_list()
    values["weights"] = kernel.reshape(shape)
    values["biases"] = np.array([bias])
    return {head_variables[k].op.name: v.astype(np.float32) for k, v in values.items()}


def build_probe_init(scorer, paths, targets, head_variables, config, views, seed, log,
                     report_path, rank_groups=None, rank_weight=0.0, rank_margin=0.05):
    """``init_fn(session)``: the head fitted by ridge on the frozen network's pooled features of
    `views` of each training image (one ridge row per view), then written into the head.

    Runs after the start is restored, so the features are those fine-tuning begins from.

    Args:
      scorer: a `rankiqa.serve.scoring.Scorer` branch of the training graph with ``features``.
      paths, targets: the training images and their scores.
      head_variables: the head's model variables (``weights``, ``biases``, and the batch-norm
        ones of a normalising head).
      config: `rankiqa.config.ProbeConfig` (alphas, folds, rank_groups).
      views: `rankiqa.preprocessing.views.Views` of each image.
      report_path: where probe.json goes (None: nowhere, as in a job's non-chief workers).
      rank_groups: `rankiqa.data.lists.RankGroup`s for the ranking-aware probe (`fit_ranked`
        at `rank_weight` and `rank_margin`): a seeded sample of ``config.rank_groups`` of
        them, each level scored on the same `views`.

    Raises:
      InputError: the network exposes no pooled features, or its head is not linear.
    """
    if scorer.features is None:
        raise InputError(f"probe.enabled needs a network that exposes its pooled features; "
                         f"{scorer.model.net} does not")
    head = {v.op.name.rsplit("/", 1)[-1]: v for v in head_variables}
    if not {"weights", "biases"} <= set(head):
        raise InputError(f"probe.enabled needs a linear head; found "
                         f"{sorted(v.op.name for v in head.values())}")

    def init_fn(sess):
        log(f"probe: pooled features of {len(paths)} training images x {views.count} views")
        bar = Progress("probe: features of", len(paths), lambda line, end: log(line))
        x = scorer.values(paths, views, tensor="features", session=sess,
                          progress=lambda done, total: bar.update(done))
        x = x.reshape(-1, x.shape[-1])  # one row per view
        y = np.repeat(targets, views.count)
        fit = fit_ridge(x, y, config.alphas, config.folds, seed=seed,
                        groups=np.repeat(np.arange(len(paths)), views.count))
        cv = ", ".join(f"{a:g}: {s:.4f}" for a, s in fit["cv_srocc"].items())
        log(f"probe: ridge alpha {fit['alpha']:g} on {x.shape[1]} features "
            f"(cross-validated srocc by alpha {cv})")
        report = {}
        if rank_groups and rank_weight:
            fit = _fit_ranked_on_groups(scorer, sess, x, y, fit, rank_groups, config.rank_groups,
                                        (rank_weight, rank_margin), views, seed, log)
            report["rank"] = fit["rank"]
        by_name = {v.op.name: v for v in head.values()}
        restore.assign([(by_name[name], value) for name, value in head_values(fit, head).items()],
                       sess)
        if report_path:
            rundir.write_json_atomic(report_path, {
                "alpha": fit["alpha"], "cv_srocc": fit["cv_srocc"],
                "features": int(x.shape[1]), "images": len(paths), "crops": views.count,
                "views": views.as_dict(), **report})

    return init_fn


def _fit_ranked_on_groups(scorer, sess, x, y, fit, rank_groups, sample, hinge, views, seed,
                          log):
    """`fit_ranked` on the frozen features of a seeded sample of `sample` of `rank_groups`,
    `hinge` its (weight, margin)."""
    count = min(sample, len(rank_groups))
    chosen = np.sort(np.random.default_rng(seed).choice(len(rank_groups), count, replace=False))
    groups, levels = [rank_groups[k] for k in chosen], len(rank_groups[0].paths)
    if count < len(rank_groups):  # why fewer than the "ranking on N groups" line before
        log(f"probe: a seeded {count} of the {len(rank_groups)} rank groups (probe.rank_groups: "
            f"each costs {levels} x {views.count} forward passes); fine-tuning's ranking hinge "
            "draws from all of them")
    bar = Progress("probe: features of rank groups", count, lambda line, end: log(line))
    f = scorer.values([p for g in groups for p in g.paths], views, "features", sess,
                      lambda done, total: bar.update(done // levels))
    g = f.mean(axis=1).reshape(count, levels, -1)  # a copy's features: its views' mean
    fit = fit_ranked(x, y, g, fit, *hinge)
    r = fit["rank"]
    log(f"probe: ranking weight {r['weight']:g} on {r['pairs']} level pairs of {count} groups: "
        f"pair accuracy {r['pair_accuracy_before']:.3f} -> {r['pair_accuracy']:.3f} "
        f"({r['iterations']} Newton steps)")
    return fit
