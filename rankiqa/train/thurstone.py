"""People's pairwise judgements turned into scores (`rankiqa scale`): Thurstone Case V.

Each photo i has a quality s_i; a rater prefers i to j with probability Phi((s_i - s_j) / SIGMA),
SIGMA chosen so that one unit is a just-objectionable difference (JOD): one unit apart, 75 % of
answers prefer the better photo (as the pwcmp toolbox scales, Perez-Ortiz and Mantiuk 2017). A
tie counts half an answer each way. The scores maximise the likelihood of the answers under a
Gaussian prior (mean 0, `PRIOR_SD` JOD), which keeps them finite where a photo always won and
places photos no answer connects near the middle; they are reported centred on their mean.
Intervals come from a bootstrap over the answers.
"""

import dataclasses

import numpy as np
from scipy import optimize, special, stats

from rankiqa.errors import InputError

SIGMA = 1.0 / stats.norm.ppf(0.75)  # 1.4826: one JOD apart, 75 % prefer the better
PRIOR_SD = 2.0  # JOD: a weak prior, worth a few answers


@dataclasses.dataclass(frozen=True)
class Scaled:
    """Scores in JOD (mean 0), 95 % bootstrap intervals, and answers per photo."""

    photos: list
    scores: np.ndarray
    low: np.ndarray
    high: np.ndarray
    answers: np.ndarray


def _negative_log_posterior(s, i, j, outcome, prior_sd):
    d = (s[i] - s[j]) / SIGMA
    log_p, log_q = special.log_ndtr(d), special.log_ndtr(-d)
    value = -np.sum(outcome * log_p + (1 - outcome) * log_q) + 0.5 * np.sum(s ** 2) / prior_sd ** 2
    pdf = np.exp(-0.5 * d ** 2) / np.sqrt(2 * np.pi)
    dd = -(outcome * pdf / np.exp(log_p) - (1 - outcome) * pdf / np.exp(log_q)) / SIGMA
    grad = np.bincount(i, dd, len(s)) - np.bincount(j, dd, len(s)) + s / prior_sd ** 2
    return value, grad


def fit(i, j, outcome, count, prior_sd=PRIOR_SD, start=None):
    """Maximum a posteriori scores of `count` photos from answers (`i` preferred to `j` with
    `outcome` 1, the reverse 0, a tie 0.5), centred on their mean."""
    start = np.zeros(count) if start is None else start
    result = optimize.minimize(_negative_log_posterior, start, jac=True, method="L-BFGS-B",
                               args=(np.asarray(i), np.asarray(j), np.asarray(outcome, float),
                                     prior_sd))
    return result.x - result.x.mean()


def scale(judgements, bootstrap=200, seed=0, prior_sd=PRIOR_SD):
    """`Scaled` scores of every photo the judgements (`rankiqa.data.judgements.Judgement`) name."""
    if not judgements:
        raise InputError("no answers to scale")
    if bootstrap < 0:
        raise InputError(f"--bootstrap must be 0 or more, got {bootstrap}")
    photos = sorted({p for g in judgements for p in (g.left, g.right)})
    index = {p: k for k, p in enumerate(photos)}
    i = np.array([index[g.left] for g in judgements])
    j = np.array([index[g.right] for g in judgements])
    outcome = np.array([g.outcome for g in judgements])
    scores = fit(i, j, outcome, len(photos), prior_sd)
    low, high = scores.copy(), scores.copy()
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws = np.empty((bootstrap, len(photos)))
        for b in range(bootstrap):
            k = rng.integers(0, len(i), len(i))
            draws[b] = fit(i[k], j[k], outcome[k], len(photos), prior_sd, start=scores)
        low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    answers = np.bincount(i, minlength=len(photos)) + np.bincount(j, minlength=len(photos))
    return Scaled(photos, scores, low, high, answers)
