"""A stand-in for real opinion scores when no IQA dataset is at hand.

Each distorted image of a rank list is scored by MS-SSIM against its own pristine reference: a
*full-reference metric*, not human opinion. It lets the demo run stage two end to end on a new
machine; its figures say that the chain works, not how well a model agrees with people.

MS-SSIM is computed here in NumPy, exactly as ``tf.image.ssim_multiscale`` defines it (11-tap
Gaussian of sigma 1.5, VALID filtering, k1 0.01, k2 0.03, the paper's five scale weights,
symmetric padding of odd sizes before each 2x2 average), but with the Gaussian applied as two
1-D passes in float32: TensorFlow's 11x11 depthwise convolution took 0.45 s per 512² pair on a
2-core CPU (the demo's 272 pairs: 152 s), this 0.09 s (31 s), and tests/test_standin.py holds it
to TensorFlow's figure.
"""

import numpy as np
from scipy import ndimage

from rankiqa.data import images as images_lib
from rankiqa.data import mos

STANDIN_NAME = "MS-SSIM stand-in (full-reference metric, not human opinion)"
POWER_FACTORS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
FILTER_SIZE, FILTER_SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03


def _gaussian_taps():
    coords = np.arange(FILTER_SIZE, dtype=np.float32) - (FILTER_SIZE - 1) / 2.0
    taps = np.exp(-0.5 * coords ** 2 / FILTER_SIGMA ** 2)
    return taps / taps.sum()  # the outer product of these is TensorFlow's 2-D softmax kernel


def _filter(x, taps):
    """Gaussian-weighted local means of [H, W, C], VALID: [H - 10, W - 10, C]."""
    half = len(taps) // 2  # correlate1d centres the taps; VALID drops the borders it padded
    for axis in (0, 1):
        x = ndimage.correlate1d(x, taps, axis=axis, mode="constant")
    return x[half:x.shape[0] - half, half:x.shape[1] - half]


def _ssim_per_channel(x, y, max_val, taps):
    """(ssim, cs) per channel, as TensorFlow's ``_ssim_per_channel`` with compensation 1."""
    c1, c2 = (K1 * max_val) ** 2, (K2 * max_val) ** 2
    mean_x, mean_y = _filter(x, taps), _filter(y, taps)
    num0 = mean_x * mean_y * 2.0
    den0 = mean_x ** 2 + mean_y ** 2
    luminance = (num0 + c1) / (den0 + c1)
    num1 = _filter(x * y, taps) * 2.0
    den1 = _filter(x ** 2 + y ** 2, taps)
    cs = (num1 - num0 + c2) / (den1 - den0 + c2)
    return (luminance * cs).mean(axis=(0, 1)), cs.mean(axis=(0, 1))


def _halve(x):
    """TensorFlow's MS-SSIM downscale: pad an odd side by repeating its edge, then 2x2 means."""
    x = np.pad(x, ((0, x.shape[0] % 2), (0, x.shape[1] % 2), (0, 0)), mode="symmetric")
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def ms_ssim(reference, distorted, max_val=255.0):
    """MS-SSIM of two [H, W, C] images of the same shape, each side at least 11 * 16 pixels."""
    x, y = (np.asarray(a, np.float32) for a in (reference, distorted))  # as TensorFlow
    if x.shape != y.shape or x.ndim != 3:
        raise ValueError(f"MS-SSIM needs two [H, W, C] images of one shape, got {x.shape} and "
                         f"{y.shape}")
    smallest = FILTER_SIZE * 2 ** (len(POWER_FACTORS) - 1)
    if min(x.shape[:2]) < smallest:
        raise ValueError(f"MS-SSIM needs images of at least {smallest}x{smallest} pixels (the "
                         f"{FILTER_SIZE}-tap filter at its coarsest scale), got {x.shape[:2]}")
    taps, factors = _gaussian_taps(), []
    for k in range(len(POWER_FACTORS)):
        if k:
            x, y = _halve(x), _halve(y)
        ssim, cs = _ssim_per_channel(x, y, max_val, taps)
        factors.append(np.maximum(cs, 0.0))
    factors[-1] = np.maximum(ssim, 0.0)  # the coarsest scale counts its whole SSIM
    per_channel = np.prod([f ** p for f, p in zip(factors, POWER_FACTORS)], axis=0)
    return float(per_channel.mean())


def msssim_items(groups):
    """ScoredImages for every image of `groups` (level 0 scores 1.0 by definition)."""
    items, seen_pristine = [], set()
    for g in groups:
        reference = None
        for level, path in enumerate(g.paths):
            if level == 0:
                if path in seen_pristine:
                    continue  # one pristine row per reference, not one per family
                seen_pristine.add(path)
                value = 1.0
            else:
                reference = images_lib.load_image(g.paths[0]) if reference is None else reference
                value = ms_ssim(reference, images_lib.load_image(path))
            items.append(mos.ScoredImage(path, float(np.clip(value, 0, 1)), value,
                                         g.reference, g.distortion if level else "pristine"))
    return items
