"""Quality-assessment metrics on numpy arrays: the figures papers report.

``predicted`` and ``target`` are 1-D arrays of equal length, higher meaning better.
"""

import warnings

import numpy as np
from scipy import optimize, stats

from rankiqa.errors import InputError


def _check(predicted, target):
    p = np.asarray(predicted, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise InputError(f"predicted has {p.size} values but target has {t.size}")
    if p.size < 2:
        raise InputError("correlation needs at least 2 images")
    return p, t


def _correlation(statistic, predicted, target):
    """`statistic`'s coefficient, NaN (quietly) where either side is constant: no correlation
    is defined there (e.g. a distortion whose images all share one score)."""
    p, t = _check(predicted, target)
    if np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(statistic(p, t)[0])


def srocc(predicted, target):
    """Spearman rank-order correlation."""
    return _correlation(stats.spearmanr, predicted, target)


def krocc(predicted, target):
    """Kendall rank-order correlation (tau-b)."""
    return _correlation(stats.kendalltau, predicted, target)


def plcc(predicted, target):
    """Pearson linear correlation of the raw predictions."""
    return _correlation(stats.pearsonr, predicted, target)


def rmse(predicted, target):
    p, t = _check(predicted, target)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def logistic4(x, b1, b2, b3, b4):
    """The four-parameter logistic of VQEG/IQA practice: (b1-b2)/(1+exp(-(x-b3)/|b4|)) + b2."""
    z = np.clip(-(x - b3) / (np.abs(b4) + 1e-12), -60.0, 60.0)  # exp overflows past ~700
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def fit_logistic4(predicted, target, at=None):
    """Fits `logistic4` mapping predictions onto the target scale; returns the mapped values
    of `predicted` (or of the points `at`: the fitted curve, for a plot).

    Falls back to a linear fit when the optimiser does not converge (near-constant predictions),
    so a metric is always defined.
    """
    p, t = _check(predicted, target)
    x = p if at is None else np.asarray(at, np.float64)
    start = [t.max(), t.min(), np.median(p), max(p.std(), 1e-6)]
    if p.size <= len(start) or np.ptp(p) == 0:  # four parameters need more than four points
        return _linear_fit(p, t, x)
    try:
        with warnings.catch_warnings():
            # a perfect fit leaves the covariance undefined; only the parameters are used
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(logistic4, p, t, p0=start, maxfev=20000)
        if np.all(np.isfinite(logistic4(p, *params))):
            return logistic4(x, *params)
    except (RuntimeError, TypeError, ValueError, optimize.OptimizeWarning):  # ValueError: huge
        # predictions overflow inside the optimiser
        pass
    return _linear_fit(p, t, x)


def _linear_fit(p, t, x):
    if np.ptp(p) == 0:
        return np.full_like(x, t.mean())
    try:
        slope, intercept = np.polyfit(p, t, 1)
    except (np.linalg.LinAlgError, ValueError):  # predictions too large to fit (diverged)
        return np.full_like(x, t.mean())
    return slope * x + intercept


def interval(r, n, spearman=False, level=0.95):
    """The `level` confidence interval ``[low, high]`` of a correlation `r` over `n` images by
    Fisher's z (for Spearman's, Fieller, Hartley and Pearson's variance 1.06 / (n - 3)); None
    where undefined (NaN, or 3 images or fewer). On 100 validation photos SROCC 0.58 is
    [0.43, 0.70]: which of two close figures is better often cannot be told."""
    if not np.isfinite(r) or n <= 3:
        return None
    spread = stats.norm.ppf(0.5 + level / 2) * np.sqrt((1.06 if spearman else 1.0) / (n - 3))
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    return [float(np.tanh(z - spread)), float(np.tanh(z + spread))]


def summary(predicted, target):
    """Every figure at once: srocc, krocc, plcc, plcc_logistic, rmse, rmse_logistic, count,
    and 95 % intervals of srocc and plcc (`interval`: srocc_ci, plcc_ci)."""
    p, t = _check(predicted, target)
    mapped = fit_logistic4(p, t)
    figures = {
        "srocc": srocc(p, t), "krocc": krocc(p, t), "plcc": plcc(p, t),
        "plcc_logistic": plcc(mapped, t), "rmse": rmse(p, t), "rmse_logistic": rmse(mapped, t),
        "count": int(p.size),
    }
    figures["srocc_ci"] = interval(figures["srocc"], p.size, spearman=True)
    figures["plcc_ci"] = interval(figures["plcc"], p.size)
    return figures


def per_group(predicted, target, groups, min_count=3):
    """``{group: summary}`` (`summary`) of each group of at least `min_count` items, where
    `groups` (one name or None per item) names two or more; {} otherwise. Figures within one
    kind of photo say what an overall figure hides: a model that only tells kinds apart ranks
    well overall."""
    names = sorted({g for g in groups if g is not None})
    if len(names) < 2:
        return {}
    p, t = np.asarray(predicted, np.float64), np.asarray(target, np.float64)
    out = {}
    for name in names:
        rows = [k for k, g in enumerate(groups) if g == name]
        if len(rows) >= min_count:
            out[name] = summary(p[rows], t[rows])
    return out


def describe_groups(by_group):
    """`` per group: ss01 srocc 0.92 (n=200), ...`` for a report line; empty without groups."""
    if not by_group:
        return ""
    return " per group: " + ", ".join(f"{g} srocc {f['srocc']:.4f} (n={f['count']})"
                                      for g, f in by_group.items())


def describe_interval(ci):
    """`` [0.43, 0.70]`` for a report line; empty where undefined."""
    return "" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def ordered_share(differences):
    """The share of pair differences (the better image's score minus the worse one's) that
    order the pair rightly: positive counts 1, a tie counts half (chance is 0.5 whatever a
    network's resolution, and a network that scores everything alike scores 0.5, not 0)."""
    d = np.asarray(differences, np.float64)
    return float(np.mean((d > 0) + 0.5 * (d == 0)))


def pair_accuracy(groups):
    """The one pair accuracy: of each group's level pairs i < j (level i the better, level 0
    the reference), the share its scores order so (`ordered_share`: ties half), then the mean
    over groups. Stage one's held-out ranks, `rankiqa ladders`, teach's rank groups and the
    probes all count it here; `rankiqa.losses.ranking_accuracy` is its in-graph twin.

    Args:
      groups: ``[groups, levels]`` scores (a ragged list of groups too), or one group
        ``[levels]``.
    """
    if len(groups) and np.ndim(groups[0]) == 0:  # one group
        groups = [groups]
    if len(groups) == 0:
        raise InputError("a pair accuracy needs at least one group")
    per_group = []
    for scores in groups:
        s = np.asarray(scores, np.float64)
        if len(s) < 2:
            raise InputError(f"a group of {len(s)} level has no pair to order")
        i, j = np.triu_indices(len(s), k=1)
        per_group.append(ordered_share(s[i] - s[j]))
    return float(np.mean(per_group))
