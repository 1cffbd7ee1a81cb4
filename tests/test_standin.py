"""The demo's MS-SSIM stand-in computes what ``tf.image.ssim_multiscale`` computes."""

import numpy as np
import pytest

from rankiqa.compat import tf
from rankiqa.data import standin


def _pair(shape, seed):
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(np.cumsum(rng.normal(size=shape), axis=0), axis=1)
    reference = np.interp(smooth, (smooth.min(), smooth.max()), (0, 255))
    distorted = np.clip(reference + rng.normal(scale=20.0, size=shape), 0, 255)
    return reference.round().astype(np.uint8), distorted.round().astype(np.uint8)


@pytest.mark.parametrize("shape", [(176, 176, 3), (181, 197, 3), (240, 203, 1)])
def test_ms_ssim_matches_tensorflow_on_even_and_odd_sizes(shape):
    pairs = [_pair(shape, seed) for seed in range(3)]
    with tf.Graph().as_default(), tf.Session() as sess:
        a = tf.placeholder(tf.float32, [None, *shape])
        b = tf.placeholder(tf.float32, [None, *shape])
        expected = sess.run(tf.image.ssim_multiscale(a, b, max_val=255.0),
                            {a: [p[0] for p in pairs], b: [p[1] for p in pairs]})
    ours = [standin.ms_ssim(*p) for p in pairs]
    assert 0.05 < min(ours) and max(ours) < 0.99  # a real distortion, not a trivial case
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    assert standin.ms_ssim(pairs[0][0], pairs[0][0]) == pytest.approx(1.0)


def test_ms_ssim_says_what_is_wrong_with_its_input():
    reference, distorted = _pair((200, 200, 3), 0)
    with pytest.raises(ValueError, match="one shape"):
        standin.ms_ssim(reference, distorted[:, :199])
    with pytest.raises(ValueError, match="at least 176x176"):
        standin.ms_ssim(reference[:100], distorted[:100])
