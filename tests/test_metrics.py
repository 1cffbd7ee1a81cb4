import numpy as np
import pytest
from scipy import stats

from rankiqa import metrics
from rankiqa.errors import InputError


def test_metrics_equal_scipy(rng):
    target = rng.uniform(size=200)
    predicted = target + rng.normal(scale=0.2, size=200)
    s = metrics.summary(predicted, target)
    assert s["srocc"] == pytest.approx(stats.spearmanr(predicted, target)[0], abs=1e-12)
    assert s["krocc"] == pytest.approx(stats.kendalltau(predicted, target)[0], abs=1e-12)
    assert s["plcc"] == pytest.approx(stats.pearsonr(predicted, target)[0], abs=1e-12)
    assert s["rmse"] == pytest.approx(np.sqrt(np.mean((predicted - target) ** 2)))
    assert s["count"] == 200


def test_logistic_mapping_straightens_a_monotone_curve(rng):
    x = np.linspace(-3, 3, 300)
    target = 1 / (1 + np.exp(-2 * x))
    s = metrics.summary(x, target)
    assert s["plcc_logistic"] > 0.999 > s["plcc"]
    assert s["srocc"] == pytest.approx(1.0)


def test_bad_shapes():
    with pytest.raises(ValueError, match="predicted has 3 values but target has 2"):
        metrics.srocc([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        metrics.plcc([1], [1])


@pytest.mark.filterwarnings("ignore:An input array is constant")  # the nan it warns about is the point
def test_summary_on_tiny_or_constant_groups_is_defined():
    s = metrics.summary([0.1, 0.5, 0.4], [0.2, 0.9, 0.5])  # fewer points than parameters
    assert np.isfinite(s["plcc_logistic"]) and s["count"] == 3
    s = metrics.summary([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert s["rmse_logistic"] == pytest.approx(np.std([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))


def test_the_fitted_logistic_evaluated_elsewhere_is_the_same_curve():
    rng = np.random.default_rng(3)
    predicted = rng.uniform(0, 1, 200)
    target = metrics.logistic4(predicted, 0.9, 0.1, 0.5, 0.1) + rng.normal(0, 0.01, 200)
    grid = np.linspace(0, 1, 11)
    curve = metrics.fit_logistic4(predicted, target, at=grid)
    np.testing.assert_allclose(metrics.fit_logistic4(predicted, target, at=predicted),
                               metrics.fit_logistic4(predicted, target))
    # the curve recovers the generating logistic, and is monotone like it
    np.testing.assert_allclose(curve, metrics.logistic4(grid, 0.9, 0.1, 0.5, 0.1), atol=0.02)
    assert np.all(np.diff(curve) > 0)


def test_a_constant_side_has_no_correlation_and_no_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's ConstantInputWarning would fail here
        for fn in (metrics.srocc, metrics.krocc, metrics.plcc):
            assert np.isnan(fn([1.0, 2.0, 3.0], [0.5, 0.5, 0.5]))
            assert np.isnan(fn([2.0, 2.0, 2.0], [0.1, 0.2, 0.3]))
            assert fn([1.0, 2.0, 3.0], [0.1, 0.2, 0.4]) > 0.9


def test_correlation_intervals_cover_the_true_value_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    rho, n, covered = 0.6, 40, {"plcc": 0, "srocc": 0}
    true = {"plcc": rho, "srocc": 6 / np.pi * np.arcsin(rho / 2)}  # Spearman's of a normal pair
    for _ in range(400):
        x = rng.standard_normal(n)
        y = rho * x + np.sqrt(1 - rho ** 2) * rng.standard_normal(n)
        figures = metrics.summary(x, y)
        for name in covered:
            low, high = figures[f"{name}_ci"]
            covered[name] += low <= true[name] <= high
    assert 0.92 <= covered["plcc"] / 400 <= 0.98, covered
    assert 0.92 <= covered["srocc"] / 400 <= 0.98, covered
    assert metrics.summary([1, 2, 3], [1, 3, 2])["srocc_ci"] is None  # three images: undefined


def test_pair_accuracy_counts_ordered_pairs_and_half_ties():
    assert metrics.pair_accuracy([5, 4, 3, 2, 1, 0]) == 1.0
    assert metrics.pair_accuracy([0, 1, 2, 3, 4, 5]) == 0.0
    assert metrics.pair_accuracy([2, 1, 1]) == pytest.approx((1 + 1 + 0.5) / 3)
    assert metrics.pair_accuracy([[1, 1, 1], [1, 1, 1]]) == 0.5  # alike: chance, not 0
    # per group, then the mean over groups: a short group weighs as much as a long one
    assert metrics.pair_accuracy([[2, 1], [0, 1, 2]]) == pytest.approx((1.0 + 0.0) / 2)
    assert metrics.ordered_share([1.0, -1.0, 0.0, 2.0]) == pytest.approx(2.5 / 4)
    with pytest.raises(InputError, match="at least one group"):
        metrics.pair_accuracy([])
    with pytest.raises(InputError, match="no pair to order"):
        metrics.pair_accuracy([[1.0]])


def test_teach_and_ladders_count_pairs_as_metrics_does():
    from rankiqa.data.lists import RankGroup
    from rankiqa.train import teach

    groups = [RankGroup("a", "gblur", ("a0", "a1", "a2")),
              RankGroup("b", "gblur", ("b0", "b1", "b2")), RankGroup("c", "wn", ("c0", "c1", "c2"))]
    scores = {"a0": 3, "a1": 2, "a2": 2, "b0": 0, "b1": 1, "b2": 2, "c0": 1, "c1": 0, "c2": 0}
    result = teach.ladder_accuracy(groups, scores)
    rows = [[scores[p] for p in g.paths] for g in groups]
    assert result["pair_accuracy"] == metrics.pair_accuracy(rows)
    assert result["families"] == {"gblur": metrics.pair_accuracy(rows[:2]),
                                  "wn": metrics.pair_accuracy(rows[2:])}
    assert result["families"]["gblur"] == pytest.approx((2.5 / 3 + 0.0) / 2)


def test_figures_per_group_are_each_groups_own(rng):
    from rankiqa import metrics

    # two kinds told apart perfectly, each ranked at random inside: high overall, ~0 within
    target = np.concatenate([rng.uniform(0, 0.4, 50), rng.uniform(0.6, 1.0, 50)])
    predicted = np.concatenate([rng.uniform(0, 1, 50), rng.uniform(2, 3, 50)])
    groups = ["a"] * 50 + ["b"] * 50
    by_group = metrics.per_group(predicted, target, groups)
    assert metrics.srocc(predicted, target) > 0.7
    for name, rows in (("a", slice(0, 50)), ("b", slice(50, 100))):
        assert by_group[name]["srocc"] == pytest.approx(
            metrics.srocc(predicted[rows], target[rows]))
        assert by_group[name]["count"] == 50 and abs(by_group[name]["srocc"]) < 0.4
    assert metrics.per_group(predicted, target, ["a"] * 100) == {}  # one group: nothing more
    # a group of fewer than 3 gives no figure of its own
    assert set(metrics.per_group(predicted[:52], target[:52], groups[:52])) == {"a"}
    assert set(metrics.per_group(predicted[47:], target[47:], groups[47:])) == {"a", "b"}
    assert metrics.describe_groups(by_group).startswith(" per group: a srocc ")
