import numpy as np
import pytest
from PIL import Image

from rankiqa.compat import tf
from rankiqa.data import lists, pipeline


@pytest.fixture
def offset_groups(tmp_path, rng):
    """Groups whose level k is the base image + 20k: a shared crop shows a constant offset."""
    groups = []
    for r in range(3):
        base = rng.integers(0, 100, size=(40, 50, 3)).astype(np.uint8)
        paths = []
        for k in range(6):
            path = tmp_path / f"ref{r}_{k}.png"
            Image.fromarray(base + 20 * k).save(path)
            paths.append(str(path))
        groups.append(lists.RankGroup(f"ref{r}", "offset", tuple(paths)))
    return groups


@pytest.mark.parametrize("cache", [True, False])
def test_rank_batches_are_references_by_levels_with_one_crop(offset_groups, cache):
    with tf.Graph().as_default(), tf.Session() as sess:
        ds = pipeline.rank_dataset(offset_groups, crop_size=16, references_per_batch=2, seed=1,
                                   cache=cache)
        batch_op = tf.data.make_one_shot_iterator(ds).get_next()
        for _ in range(4):
            batch = sess.run(batch_op)
            assert batch.shape == (12, 16, 16, 3) and batch.dtype == np.uint8
            per_ref = batch.reshape(2, 6, 16, 16, 3).astype(np.int32)
            for ref in per_ref:
                for k in range(6):  # same crop and flip: the difference is exactly the offset
                    np.testing.assert_array_equal(ref[k] - ref[0], 20 * k)


def test_crop_larger_than_image_is_named(offset_groups):
    with pytest.raises(lists.ListError, match=r"ref0_0\.png is 50x40, smaller than crop_size 64"):
        pipeline.check_sizes(offset_groups, 64)


def _mos_batches(paths, n, **kwargs):
    with tf.Graph().as_default(), tf.Session() as sess:
        ds = pipeline.mos_dataset(paths, [0.5] * len(paths), crop_size=16, batch_size=4, seed=3,
                                  **kwargs)
        batch_op = tf.data.make_one_shot_iterator(ds).get_next()
        return [sess.run(batch_op) for _ in range(n)]


def test_random_scale_shrinks_before_cropping_and_is_seeded(tmp_path):
    """A fine checkerboard stays 0/255 in native crops; shrunk, it averages towards grey."""
    board = (((np.indices((64, 64)) // 2).sum(0) % 2) * 255).astype(np.uint8)
    paths = []
    for k in range(4):
        paths.append(str(tmp_path / f"board{k}.png"))
        Image.fromarray(np.stack([board] * 3, -1)).save(paths[-1])
    native = np.concatenate([images for images, _ in _mos_batches(paths, 3)])
    assert set(np.unique(native)) == {0, 255}
    scaled = _mos_batches(paths, 3, random_scale=True)
    crops = np.concatenate([images for images, _ in scaled])
    assert crops.shape == (12, 16, 16, 3)
    contrast = sorted(float(c.std()) for c in crops)
    assert contrast[0] < 30 < 60 < contrast[-1], contrast  # some shrunk a lot, some barely
    again = np.concatenate([images for images, _ in _mos_batches(paths, 3, random_scale=True)])
    np.testing.assert_array_equal(crops, again)
