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


def _mills(x):
    """phi(x) / Phi(x), computed in logs so that it stays finite far into either tail."""
    return np.exp(-0.5 * x ** 2 - 0.5 * np.log(2 * np.pi) - special.log_ndtr(x))


def _negative_log_posterior(s, i, j, outcome, prior_sd, mean):
    d = (s[i] - s[j]) / SIGMA
    value = (-np.sum(outcome * special.log_ndtr(d) + (1 - outcome) * special.log_ndtr(-d))
             + 0.5 * np.sum((s - mean) ** 2 / prior_sd ** 2))
    dd = -(outcome * _mills(d) - (1 - outcome) * _mills(-d)) / SIGMA
    grad = np.bincount(i, dd, len(s)) - np.bincount(j, dd, len(s)) + (s - mean) / prior_sd ** 2
    return value, grad


def fit(i, j, outcome, count, prior_sd=PRIOR_SD, start=None, mean=None):
    """Maximum a posteriori scores of `count` photos from answers (`i` preferred to `j` with
    `outcome` 1, the reverse 0, a tie 0.5).

    Args:
      prior_sd: the prior's standard deviation (JOD): one number, or one per photo.
      mean: the prior's mean per photo (a model's scores, `rankiqa.judge.pairs.model_prior`);
        None: 0 for every photo, and the scores are returned centred on their mean.
    """
    centre = mean is None
    mean = np.zeros(count) if centre else np.asarray(mean, float)
    start = mean.copy() if start is None else start
    result = optimize.minimize(_negative_log_posterior, start, jac=True, method="L-BFGS-B",
                               args=(np.asarray(i), np.asarray(j), np.asarray(outcome, float),
                                     prior_sd, mean))
    return result.x - result.x.mean() if centre else result.x


def covariance(s, i, j, outcome, prior_sd=PRIOR_SD):
    """The Laplace approximation's covariance of scores `s` (the MAP of `fit`): the inverse of
    the negative log posterior's Hessian, [count, count]. Costs one dense inverse: a few
    seconds at 3,000 photos."""
    i, j, outcome = np.asarray(i), np.asarray(j), np.asarray(outcome, float)
    d = (s[i] - s[j]) / SIGMA

    def curvature(x):  # -d^2/dx^2 log Phi(x), >= 0
        m = _mills(x)
        return m * (x + m)

    w = (outcome * curvature(d) + (1 - outcome) * curvature(-d)) / SIGMA ** 2
    hessian = np.diag(np.broadcast_to(1.0 / np.asarray(prior_sd, float) ** 2, s.shape))
    np.add.at(hessian, (i, i), w)
    np.add.at(hessian, (j, j), w)
    np.add.at(hessian, (i, j), -w)
    np.add.at(hessian, (j, i), -w)
    return np.linalg.inv(hessian)


def scale(judgements, bootstrap=200, seed=0, prior_sd=PRIOR_SD, prior=None):
    """`Scaled` scores of every photo the judgements (`rankiqa.data.judgements.Judgement`) name.

    Args:
      prior: None, or ``photo -> mean`` (JOD; `rankiqa.judge.pairs.model_prior` of a model's
        scores, with its `prior_sd`): the scores are then the posterior mean under the model's
        prior, as `rankiqa rate --pairs active --model` chose the pairs under, and not centred.
    """
    if not judgements:
        raise InputError("no answers to scale")
    if bootstrap < 0:
        raise InputError(f"--bootstrap must be 0 or more, got {bootstrap}")
    photos = sorted({p for g in judgements for p in (g.left, g.right)})
    index = {p: k for k, p in enumerate(photos)}
    i = np.array([index[g.left] for g in judgements])
    j = np.array([index[g.right] for g in judgements])
    outcome = np.array([g.outcome for g in judgements])
    mean = None if prior is None else np.array([prior[p] for p in photos], float)
    scores = fit(i, j, outcome, len(photos), prior_sd, mean=mean)
    low, high = scores.copy(), scores.copy()
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws = np.empty((bootstrap, len(photos)))
        for b in range(bootstrap):
            k = rng.integers(0, len(i), len(i))
            draws[b] = fit(i[k], j[k], outcome[k], len(photos), prior_sd, start=scores,
                           mean=mean)
        low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    answers = np.bincount(i, minlength=len(photos)) + np.bincount(j, minlength=len(photos))
    return Scaled(photos, scores, low, high, answers)


def mean_ratings(ratings, bootstrap=200, seed=0):
    """`Scaled` mean 1-5 rating of every photo `ratings` (`rankiqa.data.judgements.Rating`)
    name, with 95 % bootstrap intervals over each photo's own ratings (a photo rated once:
    its rating, no interval)."""
    if not ratings:
        raise InputError("no ratings to average")
    if bootstrap < 0:
        raise InputError(f"--bootstrap must be 0 or more, got {bootstrap}")
    photos = sorted({r.photo for r in ratings})
    by_photo = {p: [] for p in photos}
    for r in ratings:
        by_photo[r.photo].append(r.score)
    rng = np.random.default_rng(seed)
    scores, low, high = [], [], []
    for p in photos:
        values = np.asarray(by_photo[p], float)
        scores.append(values.mean())
        if bootstrap and len(values) > 1:
            means = rng.choice(values, (bootstrap, len(values))).mean(axis=1)
            low.append(np.percentile(means, 2.5))
            high.append(np.percentile(means, 97.5))
        else:
            low.append(values.mean())
            high.append(values.mean())
    answers = np.array([len(by_photo[p]) for p in photos])
    return Scaled(photos, np.array(scores), np.array(low), np.array(high), answers)
