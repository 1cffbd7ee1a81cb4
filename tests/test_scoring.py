"""The one scoring path: a Scorer owning its graph, and a Scorer inside a training graph."""

import json
import os

import numpy as np
import pytest

from rankiqa import nets, scoring
from rankiqa.compat import tf
from rankiqa.data.views import Views, load_image


def test_loaded_scorer_uses_the_models_own_views(stage_one):
    info = json.load(open(os.path.join(stage_one, "rankiqa.json")))
    with scoring.load_scorer(stage_one) as scorer:
        assert scorer.views == Views(48, 2, "centre_random") == Views(**info["views"])
        assert scorer.net_name == "resnet_v2_tiny" and not scorer.report.missing
        crops = np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 3)).astype(np.float32)
        assert scorer.score_batch(crops).shape == (3,)


def test_in_graph_scorer_equals_the_loaded_one(stage_one, photo_dir):
    images = [load_image(os.path.join(photo_dir, n)) for n in sorted(os.listdir(photo_dir))]
    views = Views(32, 3, "grid")
    with scoring.load_scorer(stage_one) as loaded:
        expected = loaded.crop_scores(images, views)
        mean = loaded.score_images(images, views)
        median = loaded.score_images(images, views, aggregate="median")
        with pytest.raises(ValueError, match="unknown aggregate 'max'"):
            loaded.score_images(images, views, aggregate="max")
    network_fn = nets.get_network_fn("resnet_v2_tiny")
    with tf.Graph().as_default():
        # a training graph: the variables exist already, the branch reuses them
        network_fn(tf.zeros([1, 32, 32, 3]), is_training=True)
        scorer = scoring.Scorer.in_graph(network_fn, views)
        scorer.batch_size = 4  # several session runs per call: one batching loop
        saver = tf.train.Saver()
        with tf.Session() as sess:
            saver.restore(sess, tf.train.latest_checkpoint(stage_one))
            got = scorer.crop_scores(images, session=sess)
            features = scorer.run(scorer.features, views.apply(images[0]), sess)
    assert got.shape == (6, 3) and features.shape == (3, 64)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean, expected.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(median, np.median(expected, axis=1), rtol=1e-6)


def test_scorer_needs_a_network_name(tmp_path, stage_one):
    with tf.Graph().as_default(), tf.Session() as sess:
        scoring.build_scoring_graph("resnet_v2_tiny")
        sess.run(tf.global_variables_initializer())
        tf.train.Saver().save(sess, str(tmp_path / "model.ckpt"))
    with pytest.raises(ValueError, match="no rankiqa.json beside it; pass --net"):
        scoring.load_scorer(str(tmp_path))
    with scoring.load_scorer(str(tmp_path), net="resnet_v2_tiny") as scorer:
        assert scorer.views == Views(64, 1, "grid")  # the network's default size, one centre
    with pytest.raises(ValueError, match="an .npz model needs --net"):
        scoring.load_scorer(weights_file=str(tmp_path / "w.npz"))
