"""Synthetic distortions in pure numpy and Pillow: the source of stage one's rankings.

``DISTORTIONS`` maps a family name to ``(function, levels)``: ``function(image, level_value, rng)``
takes and returns ``uint8 [H, W, 3]``; ``levels`` lists the five parameter values from mildest to
strongest, so that level k (1..5) is worse than level k-1 and level 0 is the pristine image.

LIVE's four families use the RankIQA paper's parameters; the others follow TID2013's families
with levels chosen so that quality falls monotonically.
"""

import io

import numpy as np
from PIL import Image, ImageFilter

from rankiqa.errors import InputError

# libjpeg clamps quality to [1, 100]; 1 is the lowest the encoder allows.
JPEG_LOWEST_QUALITY = 1


def _to_uint8(x):
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def gaussian_blur(image, sigma, rng):
    """Gaussian blur with standard deviation `sigma` pixels (Pillow's extended box blur)."""
    del rng
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=sigma)))


def white_noise(image, variance, rng):
    """Additive white Gaussian noise of `variance` on [0, 1] pixel values, clipped."""
    x = image.astype(np.float32) / 255.0
    x += rng.normal(0.0, np.sqrt(variance), size=x.shape).astype(np.float32)
    return _to_uint8(x * 255.0)


def _encode_decode(image, fmt, **params):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, **params)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def jpeg(image, quality, rng):
    """JPEG compression at `quality` (libjpeg scale), decoded back to pixels."""
    del rng
    return _encode_decode(image, "JPEG", quality=int(quality))


def jpeg2000(image, ratio, rng):
    """JPEG 2000 (OpenJPEG through Pillow) at compression ratio `ratio`:1, decoded back."""
    del rng
    return _encode_decode(image, "JPEG2000", quality_mode="rates", quality_layers=[float(ratio)])


def contrast_change(image, factor, rng):
    """Contrast reduced to `factor` around the image mean (TID2013 #17, decreasing side)."""
    del rng
    x = image.astype(np.float32)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return _to_uint8(mean + factor * (x - mean))


def saturation_change(image, factor, rng):
    """Colour saturation scaled by `factor` towards the luminance (TID2013 #18)."""
    del rng
    x = image.astype(np.float32)
    luma = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return _to_uint8(luma[..., None] + factor * (x - luma[..., None]))


def impulse_noise(image, density, rng):
    """Salt-and-pepper noise hitting a `density` share of pixels (TID2013 #6)."""
    out = image.copy()
    hit = rng.random(image.shape[:2]) < density
    salt = rng.random(image.shape[:2]) < 0.5
    out[hit & salt] = 255
    out[hit & ~salt] = 0
    return out


def coloured_noise(image, variance, rng):
    """Gaussian noise stronger in the colour channels than in luminance (TID2013 #2).

    Independent noise per RGB channel of `variance`, with its luminance part halved, so the
    error is mostly chromatic.
    """
    x = image.astype(np.float32) / 255.0
    noise = rng.normal(0.0, np.sqrt(variance), size=x.shape).astype(np.float32)
    noise -= 0.5 * noise.mean(axis=-1, keepdims=True)
    return _to_uint8((x + noise) * 255.0)


def quantisation(image, steps, rng):
    """Uniform quantisation of each channel to `steps` levels (TID2013 #12)."""
    del rng
    step = 255.0 / (steps - 1)
    return _to_uint8(np.round(image.astype(np.float32) / step) * step)


def mean_shift(image, shift, rng):
    """Intensity shifted by `shift` grey levels, clipped (TID2013 #16, darkening side)."""
    del rng
    return _to_uint8(image.astype(np.float32) + shift)


def pixelate(image, factor, rng):
    """Downsampled by `factor` with box filtering and upsampled by nearest neighbour."""
    del rng
    h, w = image.shape[:2]
    small = Image.fromarray(image).resize(
        (max(1, w // factor), max(1, h // factor)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.NEAREST))


# family -> (function, five parameter values, mildest first)
DISTORTIONS = {
    # LIVE (the RankIQA paper's levels)
    "gblur": (gaussian_blur, (1.2, 2.5, 6.5, 15.2, 33.2)),
    "wn": (white_noise, (0.001, 0.006, 0.022, 0.088, 1.0)),
    "jpeg": (jpeg, (43, 12, 7, 4, JPEG_LOWEST_QUALITY)),
    "jp2k": (jpeg2000, (52, 150, 343, 600, 1200)),
    # TID2013-style
    "contrast": (contrast_change, (0.75, 0.55, 0.4, 0.27, 0.15)),
    "saturation": (saturation_change, (0.6, 0.4, 0.25, 0.1, 0.0)),
    "impulse": (impulse_noise, (0.005, 0.02, 0.05, 0.1, 0.2)),
    "cnoise": (coloured_noise, (0.001, 0.004, 0.012, 0.03, 0.08)),
    "quantisation": (quantisation, (48, 24, 12, 6, 3)),
    "mean_shift": (mean_shift, (-15, -35, -60, -90, -130)),
    "pixelate": (pixelate, (2, 3, 5, 8, 12)),
}

LIVE_DISTORTIONS = ("gblur", "wn", "jpeg", "jp2k")
LEVELS = 6  # pristine + five levels per family


def get_distortion(kind):
    if kind not in DISTORTIONS:
        raise InputError(f"unknown distortion {kind!r}; choose from {sorted(DISTORTIONS)}")
    return DISTORTIONS[kind]


def distort(image, kind, level, rng):
    """Applies family `kind` at `level` (0 = pristine, 1..5 mildest to strongest).

    Args:
      image: uint8 ``[H, W, 3]``.
      kind: a key of `DISTORTIONS`.
      level: 0..5.
      rng: ``numpy.random.Generator`` (used by the noise families).

    Returns:
      uint8 ``[H, W, 3]``.
    """
    func, values = get_distortion(kind)
    if not 0 <= level <= len(values):
        raise InputError(f"level must be in 0..{len(values)}, got {level}")
    if level == 0:
        return image
    return func(image, values[level - 1], rng)
