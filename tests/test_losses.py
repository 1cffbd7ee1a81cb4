import numpy as np
import pytest

from rankiqa import losses, metrics
from rankiqa.compat import tf


def run(tensor_fn, *arrays):
    with tf.Graph().as_default(), tf.Session() as sess:
        placeholders = [tf.constant(a, tf.float32) for a in arrays]
        return sess.run(tensor_fn(*placeholders))


def loop_operator_loss(scores, margin):
    """Plain-Python reference: column j compares level j with every worse level."""
    total, count = 0.0, 0
    refs, levels = scores.shape
    for r in range(refs):
        for j in range(levels - 1):
            value = sum(scores[r, j] - scores[r, i] for i in range(j + 1, levels))
            total += max(0.0, margin - value)
            count += 1
    return total / count


def loop_pairwise_loss(scores, margin):
    total, count = 0.0, 0
    refs, levels = scores.shape
    for r in range(refs):
        for i in range(levels):
            for j in range(i + 1, levels):
                total += max(0.0, margin - (scores[r, i] - scores[r, j]))
                count += 1
    return total / count


def test_rank_operator_for_six_levels_is_the_papers_matrix():
    expected = [[5, 0, 0, 0, 0], [-1, 4, 0, 0, 0], [-1, -1, 3, 0, 0], [-1, -1, -1, 2, 0],
                [-1, -1, -1, -1, 1], [-1, -1, -1, -1, -1]]
    np.testing.assert_array_equal(losses.rank_operator(6), np.array(expected, np.float32))


def test_rank_operator_shape_and_bad_levels():
    assert losses.rank_operator(2).tolist() == [[1.0], [-1.0]]
    assert losses.rank_operator(9).shape == (9, 8)
    with pytest.raises(ValueError, match="levels"):
        losses.rank_operator(1)


def test_operator_loss_hand_computed():
    # one reference, 3 levels, scores 3, 2, 0 -> columns: (3-2)+(3-0)=4, (2-0)=2
    scores = np.array([[3.0, 2.0, 0.0]])
    # margin 5: max(0, 5-4)=1, max(0, 5-2)=3 -> mean 2
    assert run(lambda s: losses.rank_hinge_loss(s, 5.0), scores) == pytest.approx(2.0)


def test_pairwise_loss_hand_computed():
    scores = np.array([[3.0, 2.0, 0.0]])
    # pairs (0,1)=1, (0,2)=3, (1,2)=2; margin 2.5 -> 1.5, 0, 0.5 -> mean 2/3
    assert run(lambda s: losses.pairwise_hinge_loss(s, 2.5), scores) == pytest.approx(2 / 3)


@pytest.mark.parametrize("shape", [(4, 6), (64, 6), (3, 2), (5, 9)])
def test_losses_match_loop_reference_on_random_scores(shape, rng):
    scores = rng.normal(size=shape) * 3
    margin = 1.5
    op = run(lambda s: losses.rank_hinge_loss(s, margin), scores)
    pair = run(lambda s: losses.pairwise_hinge_loss(s, margin), scores)
    assert op == pytest.approx(loop_operator_loss(scores, margin), rel=1e-5)
    assert pair == pytest.approx(loop_pairwise_loss(scores, margin), rel=1e-5)


def test_losses_vanish_when_ordered_with_margin():
    scores = np.array([[50.0, 40.0, 30.0, 20.0, 10.0, 0.0]])
    assert run(lambda s: losses.rank_hinge_loss(s, 10.0), scores) == 0.0
    assert run(lambda s: losses.pairwise_hinge_loss(s, 10.0), scores) == 0.0


def test_ranking_accuracy_tensor_and_numpy_agree_ties_included(rng):
    scores = rng.integers(0, 4, size=(7, 6)).astype(np.float64)  # many ties
    expected = np.mean([(scores[r, i] > scores[r, j]) + 0.5 * (scores[r, i] == scores[r, j])
                        for r in range(7) for i in range(6) for j in range(i + 1, 6)])
    assert run(losses.ranking_accuracy, scores) == pytest.approx(expected)
    assert metrics.pair_accuracy(scores) == pytest.approx(expected)


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match=r"choose from \['operator', 'pairwise'\]"):
        losses.get_rank_loss_fn("triplet")
