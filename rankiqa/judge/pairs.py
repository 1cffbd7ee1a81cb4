"""Which pairs to ask next: at random, nearest in score, or the most informative (active).

Every kind hands out a batch that keeps the comparison graph connected, as ASAP does
(Mikhailiuk, Wilmot, Perez-Ortiz, Yue and Mantiuk, ICPR 2020): the minimum spanning tree of
a graph of candidate pairs, whose edge weights say how little each pair is worth. One batch
is ``count - 1`` pairs that link every photo; once it is answered, the scores are refitted
and the next batch chosen.

- ``random``: random weights (a random spanning tree), pairs asked before weigh more;
- ``nearest``: the difference of the current scores, pairs asked before weigh more;
- ``active``: 1 / the expected information gain of the answer about the scores, under
  Thurstone Case V with a Gaussian posterior (the Laplace approximation at the MAP,
  `rankiqa.judge.thurstone`) whose prior is the model's scores where a model is given
  (`model_prior`).

The posterior's covariance is dense: `MAX_ACTIVE` photos at most for ``active``.
"""

import dataclasses

import numpy as np
from scipy import sparse, special
from scipy.sparse import csgraph

from rankiqa.errors import InputError
from rankiqa.judge import thurstone

KINDS = ("active", "random", "nearest")
MAX_ACTIVE = 6000  # a dense [n, n] inverse per batch: ~10 s at 6,000 photos on two cores
ALL_PAIRS_BELOW = 400  # every pair a candidate up to here (80k pairs); above, neighbours
NEIGHBOURS = 12  # candidates per photo above ALL_PAIRS_BELOW: nearest in score, then random
_NODES, _WEIGHTS = np.polynomial.hermite.hermgauss(24)  # E over a Gaussian, exact enough


@dataclasses.dataclass(frozen=True)
class Answers:
    """The answers so far, by photo index: `i` preferred to `j` with `outcome` 1, the reverse
    0, a tie 0.5."""

    i: np.ndarray
    j: np.ndarray
    outcome: np.ndarray

    @classmethod
    def none(cls):
        return cls(np.zeros(0, int), np.zeros(0, int), np.zeros(0))

    def add(self, i, j, outcome):
        return Answers(np.append(self.i, i), np.append(self.j, j),
                       np.append(self.outcome, outcome))


def model_prior(scores, agreement, prior_sd=thurstone.PRIOR_SD):
    """The prior (mean, sd) per photo in JOD that a model's `scores` give: the quality people
    would see, given the model's, if both were Gaussian with correlation `agreement`; None
    (or agreement 0): mean 0 and `prior_sd` for every photo."""
    if not 0 <= agreement < 1:
        raise InputError(f"the model's agreement with people must be in [0, 1), got {agreement}")
    if scores is None or agreement == 0:
        return None, prior_sd
    scores = np.asarray(scores, float)
    spread = scores.std()
    z = (scores - scores.mean()) / spread if spread > 0 else np.zeros_like(scores)
    return agreement * prior_sd * z, prior_sd * np.sqrt(1 - agreement ** 2)


def posterior(count, answers, mean=None, sd=thurstone.PRIOR_SD, covariance=True):
    """The scores' posterior mean [count] and (with `covariance`) covariance [count, count]."""
    m = thurstone.fit(answers.i, answers.j, answers.outcome, count, sd, mean=(
        np.zeros(count) if mean is None else mean))
    if not covariance:
        return m, None
    return m, thurstone.covariance(m, answers.i, answers.j, answers.outcome, sd)


def _entropy(p):
    """Binary entropy in bits."""
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def information_gain(m, c, i, j):
    """Expected information (bits) an answer to each pair (`i`, `j`) gives about the scores,
    whose posterior is N(`m`, `c`): the answer's entropy less its expected entropy once the
    scores are known (BALD's form for a probit likelihood)."""
    mu = m[i] - m[j]
    var = np.maximum(c[i, i] + c[j, j] - 2 * c[i, j], 1e-12)
    marginal = special.ndtr(mu / np.sqrt(thurstone.SIGMA ** 2 + var))
    d = mu[:, None] + np.sqrt(2 * var)[:, None] * _NODES[None, :]
    known = _entropy(special.ndtr(d / thurstone.SIGMA)) @ _WEIGHTS / np.sqrt(np.pi)
    return np.maximum(_entropy(marginal) - known, 0.0)


def candidates(m, rng):
    """Candidate pairs (i < j): every pair for small collections; otherwise each photo with its
    nearest in score, the next in score order (the graph stays connected) and random others."""
    count = len(m)
    if count <= ALL_PAIRS_BELOW:
        return np.triu_indices(count, 1)
    order = np.argsort(m, kind="stable")
    rank = np.empty(count, int)
    rank[order] = np.arange(count)
    near = [order[np.clip(rank + step, 0, count - 1)] for step in range(1, NEIGHBOURS // 2 + 1)]
    far = [rng.integers(0, count, count) for _ in range(NEIGHBOURS // 2)]
    i = np.tile(np.arange(count), len(near) + len(far))
    j = np.concatenate(near + far)
    keep = i != j
    pairs = np.unique(np.sort(np.stack([i[keep], j[keep]]), axis=0), axis=1)
    return pairs[0], pairs[1]


def next_batch(kind, count, answers, rng, mean=None, sd=thurstone.PRIOR_SD):
    """The next `count` - 1 pairs of `kind` (a spanning tree), most valuable first, each
    ``(i, j)`` shown i on the left, sides drawn at random."""
    if kind not in KINDS:
        raise InputError(f"unknown kind of pairs {kind!r}; choose one of {', '.join(KINDS)}")
    if count < 2:
        raise InputError(f"pairs need at least two photos, got {count}")
    if kind == "active" and count > MAX_ACTIVE:
        raise InputError(f"active pairs need a dense covariance of the photos' scores: "
                         f"{MAX_ACTIVE} photos at most, got {count}; choose random pairs, or "
                         "rate fewer photos at a time")
    m, c = posterior(count, answers, mean, sd, covariance=kind == "active")
    i, j = candidates(m, rng)
    asked = _times_asked(count, answers, i, j)
    if kind == "active":
        # ties (no answer yet: every pair worth as much) broken at random, not into a star
        weight = 1.0 / (information_gain(m, c, i, j) + 1e-9) * rng.uniform(1.0, 1.001, len(i))
    elif kind == "nearest":
        weight = np.abs(m[i] - m[j]) + 1e-6 + 10.0 * asked * (np.ptp(m) + 1)
    else:
        weight = rng.uniform(1.0, 2.0, len(i)) + asked
    tree = csgraph.minimum_spanning_tree(sparse.coo_matrix((weight, (i, j)),
                                                           shape=(count, count))).tocoo()
    order = np.argsort(tree.data, kind="stable")
    flip = rng.random(len(order)) < 0.5
    return [(int(b), int(a)) if f else (int(a), int(b))
            for a, b, f in zip(tree.row[order], tree.col[order], flip)]


def _times_asked(count, answers, i, j):
    """How often each candidate pair (i < j) was answered so far."""
    lo, hi = np.minimum(answers.i, answers.j), np.maximum(answers.i, answers.j)
    seen = sparse.coo_matrix((np.ones(len(lo)), (lo, hi)), shape=(count, count)).tocsr()
    return np.asarray(seen[i, j]).ravel()
