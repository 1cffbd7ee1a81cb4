"""The one scoring path: a Scorer owning its graph, and a Scorer inside a training graph."""

import json
import os
import shutil

import numpy as np
import pytest

from rankiqa import nets
from rankiqa.serve import scoring
from rankiqa.compat import tf
from rankiqa.data import images as images_lib
from rankiqa.data.images import load_image
from rankiqa.preprocessing.views import Views


def test_loaded_scorer_uses_the_models_own_views(stage_one):
    info = json.load(open(os.path.join(stage_one, "rankiqa.json")))
    with scoring.load_scorer(stage_one) as scorer:
        assert scorer.views == Views(48, 2, "centre_random") == Views(**info["views"])
        assert scorer.model.net == "resnet_v2_tiny" and not scorer.model.report.missing
        crops = np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 3)).astype(np.float32)
        assert scorer.score_batch(crops).shape == (3,)


def test_in_graph_scorer_equals_the_loaded_one(stage_one, photo_dir):
    images = [load_image(os.path.join(photo_dir, n)) for n in sorted(os.listdir(photo_dir))]
    views = Views(32, 3, "grid")
    with scoring.load_scorer(stage_one) as loaded:
        expected = loaded.values(images, views)
        mean = loaded.score_items(images, views)
        median = loaded.score_items(images, views, aggregate="median")
        with pytest.raises(ValueError, match="unknown aggregate 'max'"):
            loaded.score_items(images, views, aggregate="max")
    network_fn = nets.get_network_fn("resnet_v2_tiny")
    with tf.Graph().as_default():
        # a training graph: the variables exist already, the branch reuses them
        network_fn(tf.zeros([1, 32, 32, 3]), is_training=True)
        scorer = scoring.Scorer.in_graph(network_fn, views)
        scorer.batch_size = 4  # several session runs per call: one batching loop
        saver = tf.train.Saver()
        with tf.Session() as sess:
            saver.restore(sess, tf.train.latest_checkpoint(stage_one))
            got = scorer.values(images, session=sess)
            features = scorer.values(images[:1], tensor="features", session=sess)
    assert got.shape == (6, 3) and features.shape == (1, 3, 64)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean, expected.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(median, np.median(expected, axis=1), rtol=1e-6)


def _photo_paths(photo_dir):
    return [os.path.join(photo_dir, n) for n in sorted(os.listdir(photo_dir))]


# Another batch size can change the last bits of a score: TensorFlow's CPU kernels choose their
# algorithm by the batch's size (on AMD EPYC without AVX-512, EfficientNet-Lite2's convolutions
# differ by ~3e-6 inside, ~6e-8 in the score, between 2 and 10 views a run). The views, their
# order and their company are what the loop decides: the same batch size gives the same bits.
ROUNDING = dict(rtol=1e-5, atol=1e-6)


def test_scores_are_the_same_whatever_the_batching_and_threads(stage_one, photo_dir,
                                                               monkeypatch):
    paths = _photo_paths(photo_dir)
    random_views = Views(32, 3, "random")  # seeded views: the same whatever the batch
    results = {}
    for batch_size, threads in ((64, 4), (64, 1), (3, 1), (6, 2), (1, 3), (6, 4)):
        monkeypatch.setattr(scoring, "DECODE_THREADS", threads)
        with scoring.load_scorer(stage_one, batch_size=batch_size) as scorer:
            results[batch_size, threads] = scorer.values(paths, random_views)
    for other in results.values():
        np.testing.assert_allclose(other, results[64, 4], **ROUNDING)
    # threads decode and place; they never change what a run holds: the same bits
    np.testing.assert_array_equal(results[64, 1], results[64, 4])
    np.testing.assert_array_equal(results[6, 4], results[6, 2])


def test_a_photo_scores_the_same_alone_in_a_folder_in_any_order_or_as_pixels(stage_one, photo_dir,
                                                                              tmp_path):
    paths = _photo_paths(photo_dir)
    views = Views(32, 2, "random")
    with scoring.load_scorer(stage_one) as scorer:
        together = scorer.score_items(paths, views)
        alone = [scorer.score_items([p], views)[0] for p in paths]
        backwards = scorer.score_items(paths[::-1], views)[::-1]
        copy = tmp_path / "elsewhere.png"
        shutil.copy(paths[0], copy)
        moved = scorer.score_items([str(copy)], views)[0]
        pixels = scorer.score_items([load_image(p) for p in paths], views)
    np.testing.assert_allclose(np.array(alone, np.float32), together, **ROUNDING)
    np.testing.assert_array_equal(backwards, together)  # the same runs' sizes: the same bits
    np.testing.assert_array_equal(pixels, together)
    assert moved == alone[0]


def test_iter_scores_reports_a_bad_item_in_place_and_goes_on(stage_one, photo_dir, tmp_path):
    paths = _photo_paths(photo_dir)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    items = [paths[0], str(bad), paths[1]]
    with scoring.load_scorer(stage_one, batch_size=4) as scorer:
        got = list(scorer.iter_scores(items))
        expected = scorer.values([paths[0], paths[1]])
        with pytest.raises(images_lib.BadImageError, match="broken.png"):
            scorer.values(items)
        with pytest.raises(ValueError, match="image 1: expected a path"):
            scorer.values([paths[0], np.zeros((4, 4, 2), np.uint8)])
    assert [k for k, _ in got] == [0, 1, 2]
    assert isinstance(got[1][1], images_lib.BadImageError)
    np.testing.assert_allclose(np.stack([got[0][1], got[2][1]]), expected, **ROUNDING)


def test_decoding_runs_a_bounded_number_of_batches_ahead(stage_one, photo_dir, monkeypatch):
    paths = _photo_paths(photo_dir) * 10
    monkeypatch.setattr(scoring, "DECODE_THREADS", 2)
    placed, seen = [], []
    real_apply = Views.apply

    def counting_apply(self, image, seed=0):
        placed.append(1)
        return real_apply(self, image, seed)

    monkeypatch.setattr(Views, "apply", counting_apply)
    with scoring.load_scorer(stage_one, batch_size=2) as scorer:  # one photo per batch
        for k, _ in scorer.iter_scores(paths):
            seen.append(len(placed) - (k + 1))  # photos decoded beyond the one yielded
    # at most 2 * DECODE_THREADS batches ahead, and some overlap happened
    assert max(seen) <= 2 * 2 and len(paths) == len(seen)


def test_scorer_needs_a_network_name(tmp_path, stage_one):
    with tf.Graph().as_default(), tf.Session() as sess:
        scoring.build_scoring_graph("resnet_v2_tiny")
        sess.run(tf.global_variables_initializer())
        tf.train.Saver().save(sess, str(tmp_path / "model.ckpt"))
    with pytest.raises(ValueError, match="no rankiqa.json beside it; pass --net"):
        scoring.load_scorer(str(tmp_path))
    with scoring.load_scorer(str(tmp_path), net="resnet_v2_tiny") as scorer:
        assert scorer.views == Views(64, 1, "grid")  # the network's default size, one centre
    np.savez(tmp_path / "w.npz", a=np.zeros(1))
    with pytest.raises(ValueError, match="an .npz model needs --net"):
        scoring.load_scorer(str(tmp_path / "w.npz"))
