"""Which pairs to ask (`rankiqa.judge.pairs`): batches that link every photo, the expected
information of an answer, the model's scores as a prior."""

import numpy as np
import pytest
from scipy import stats

from rankiqa.errors import InputError
from rankiqa.judge import pairs, thurstone


def connected(count, batch):
    """Whether the pairs of `batch` link all `count` photos (union-find)."""
    parent = list(range(count))

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for i, j in batch:
        parent[root(i)] = root(j)
    return len({root(k) for k in range(count)}) == 1


@pytest.mark.parametrize("count", [2, 7, 60, pairs.ALL_PAIRS_BELOW + 50])
@pytest.mark.parametrize("kind", pairs.KINDS)
def test_every_batch_is_a_spanning_tree_of_distinct_pairs(kind, count):
    rng = np.random.default_rng(1)
    answers = pairs.Answers.none()
    for _ in range(2):  # a first batch (nothing known) and one after its answers
        batch = pairs.next_batch(kind, count, answers, rng)
        assert len(batch) == count - 1 and connected(count, batch)
        assert len({tuple(sorted(p)) for p in batch}) == count - 1
        assert all(i != j and 0 <= i < count and 0 <= j < count for i, j in batch)
        i, j = np.array(batch).T
        answers = answers.add(i, j, (i < j).astype(float))


def test_information_gain_is_the_mutual_information_of_answer_and_scores(rng):
    """Against Monte Carlo: H(answer) - E_s H(answer | s) for d = s_i - s_j ~ N(mu, var)."""
    m = np.array([0.0, 0.4, 3.0, 0.1, 0.15])
    c = np.diag([1.0, 0.5, 0.5, 0.01, 0.01])
    c[0, 1] = c[1, 0] = 0.3
    i, j = np.array([0, 0, 1, 3]), np.array([1, 2, 3, 4])
    got = pairs.information_gain(m, c, i, j)
    for k in range(len(i)):
        s = rng.multivariate_normal(m, c, 400_000)
        p = stats.norm.cdf((s[:, i[k]] - s[:, j[k]]) / thurstone.SIGMA)

        def h(q):
            q = np.clip(q, 1e-12, 1 - 1e-12)
            return -(q * np.log2(q) + (1 - q) * np.log2(1 - q))

        assert got[k] == pytest.approx(h(p.mean()) - h(p).mean(), abs=2e-3)
    # a pair far apart in score, or one whose difference is known already, tells little
    assert got[1] < got[0] and got[3] < 0.01 < got[0]


def test_the_laplace_covariance_matches_the_posterior_curvature():
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, 5, 40), rng.integers(0, 5, 40)
    keep = i != j
    i, j, outcome = i[keep], j[keep], (rng.random(keep.sum()) < 0.6).astype(float)
    m = thurstone.fit(i, j, outcome, 5, mean=np.zeros(5))
    c = thurstone.covariance(m, i, j, outcome)
    eps, hessian = 1e-4, np.zeros((5, 5))
    for k in range(5):
        step = np.zeros(5)
        step[k] = eps
        up = thurstone._negative_log_posterior(m + step, i, j, outcome, thurstone.PRIOR_SD, 0)[1]
        down = thurstone._negative_log_posterior(m - step, i, j, outcome, thurstone.PRIOR_SD, 0)[1]
        hessian[k] = (up - down) / (2 * eps)
    np.testing.assert_allclose(np.linalg.inv(hessian), c, rtol=1e-4, atol=1e-7)


def test_the_models_prior_follows_its_order_as_far_as_it_is_trusted():
    scores = np.array([0.1, 0.5, 0.9, 0.3])
    mean, sd = pairs.model_prior(scores, 0.7)
    assert list(np.argsort(mean)) == list(np.argsort(scores))
    assert mean.std() == pytest.approx(0.7 * thurstone.PRIOR_SD)
    assert sd == pytest.approx(thurstone.PRIOR_SD * np.sqrt(1 - 0.49))
    assert pairs.model_prior(scores, 0.0) == (None, thurstone.PRIOR_SD)
    assert pairs.model_prior(None, 0.7) == (None, thurstone.PRIOR_SD)
    with pytest.raises(InputError, match=r"agreement with people must be in \[0, 1\)"):
        pairs.model_prior(scores, 1.0)


def test_unknown_kinds_and_collections_active_cannot_hold_are_refused():
    with pytest.raises(InputError, match="unknown kind of pairs 'best'"):
        pairs.next_batch("best", 5, pairs.Answers.none(), np.random.default_rng(0))
    with pytest.raises(InputError, match="at least two photos"):
        pairs.next_batch("random", 1, pairs.Answers.none(), np.random.default_rng(0))
    with pytest.raises(InputError, match="choose random pairs"):
        pairs.next_batch("active", pairs.MAX_ACTIVE + 1, pairs.Answers.none(),
                         np.random.default_rng(0))
