"""Synthetic distortions in pure numpy and Pillow: the source of stage one's rankings.

``DISTORTIONS`` maps a family name to ``(function, levels)``: ``function(image, level_value, rng)``
takes and returns ``uint8 [H, W, 3]``; ``levels`` lists the five parameter values from mildest to
strongest, so that level k (1..5) is worse than level k-1 and level 0 is the pristine image.

LIVE's four families use the RankIQA paper's parameters; the others follow TID2013's and
KADID-10k's families (Lin, Hosu & Saupe 2019: ``KADID_DISTORTIONS`` lists its 25 in its order)
with levels chosen so that quality falls monotonically. Families that draw random numbers take
them from `rng` only, so a (reference, family) seed gives the same copies on every machine;
their geometry (motion direction, patch size) is fixed so that levels differ in strength only.
"""

import io

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

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


def _convolve(image, kernel):
    x = image.astype(np.float32)
    kernel = (kernel / kernel.sum()).astype(np.float32)
    return _to_uint8(np.stack([ndimage.convolve(x[..., c], kernel, mode="reflect")
                               for c in range(3)], axis=-1))


def lens_blur(image, radius, rng):
    """Defocus: convolution with a disk of `radius` pixels (KADID #2)."""
    del rng
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return _convolve(image, (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float32))


def motion_blur(image, length, rng):
    """Horizontal camera shake: a line kernel of `length` pixels (KADID #3)."""
    del rng
    return _convolve(image, np.ones((1, int(length)), np.float32))


def _rgb_to_ycbcr(x):
    y = x @ np.array([0.299, 0.587, 0.114], np.float32)
    return y, (x[..., 2] - y) * 0.564, (x[..., 0] - y) * 0.713


def _ycbcr_to_rgb(y, cb, cr):
    r = y + cr / 0.713
    b = y + cb / 0.564
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return np.stack([r, g, b], axis=-1)


def colour_diffusion(image, sigma, rng):
    """Colour bleeding: both chroma channels blurred by a Gaussian of `sigma` (KADID #4)."""
    del rng
    y, cb, cr = _rgb_to_ycbcr(image.astype(np.float32))
    cb, cr = (ndimage.gaussian_filter(c, sigma, mode="reflect") for c in (cb, cr))
    return _to_uint8(_ycbcr_to_rgb(y, cb, cr))


def colour_shift(image, pixels, rng):
    """Misregistered colour: the green channel moved `pixels` right and down (KADID #5)."""
    del rng
    out = image.copy()
    k = int(pixels)
    out[k:, k:, 1] = image[:-k or None, :-k or None, 1]
    return out


def colour_quantisation(image, colours, rng):
    """A palette of `colours` colours (median cut) (KADID #6)."""
    del rng
    palette = Image.fromarray(image).quantize(colors=int(colours), method=Image.Quantize.MEDIANCUT)
    return np.asarray(palette.convert("RGB"))


def white_noise_chroma(image, variance, rng):
    """White noise of `variance` (on [0, 1]) in the two chroma channels only (KADID #12)."""
    y, cb, cr = _rgb_to_ycbcr(image.astype(np.float32) / 255.0)
    cb = cb + rng.normal(0.0, np.sqrt(variance), size=cb.shape).astype(np.float32)
    cr = cr + rng.normal(0.0, np.sqrt(variance), size=cr.shape).astype(np.float32)
    return _to_uint8(_ycbcr_to_rgb(y, cb, cr) * 255.0)


def multiplicative_noise(image, variance, rng):
    """Speckle: each value times (1 + n), n of `variance` (KADID #14)."""
    x = image.astype(np.float32) / 255.0
    x *= 1.0 + rng.normal(0.0, np.sqrt(variance), size=x.shape).astype(np.float32)
    return _to_uint8(x * 255.0)


def denoise(image, variance, rng):
    """What a denoiser leaves: white noise of `variance`, then a 5x5 median filter (KADID #15,
    which used DnCNN): smeared texture, stronger with the noise."""
    noisy = white_noise(image, variance, rng)
    return np.asarray(Image.fromarray(noisy).filter(ImageFilter.MedianFilter(5)))


def brighten(image, gamma, rng):
    """Brighter mid-tones: values on [0, 1] raised to 1 / `gamma` (KADID #16)."""
    del rng
    return _to_uint8((image.astype(np.float32) / 255.0) ** (1.0 / gamma) * 255.0)


def darken(image, gamma, rng):
    """Darker mid-tones: values on [0, 1] raised to `gamma` (KADID #17)."""
    del rng
    return _to_uint8((image.astype(np.float32) / 255.0) ** gamma * 255.0)


def jitter(image, pixels, rng):
    """Every pixel taken from a random neighbour up to `pixels` away (KADID #19)."""
    h, w = image.shape[:2]
    k = int(pixels)
    rows = np.clip(np.arange(h)[:, None] + rng.integers(-k, k + 1, size=(h, w)), 0, h - 1)
    cols = np.clip(np.arange(w)[None, :] + rng.integers(-k, k + 1, size=(h, w)), 0, w - 1)
    return image[rows, cols]


PATCH = 16  # side of the patches non_eccentricity moves and colour_block paints


def _patch_corners(image, share, rng):
    h, w = image.shape[:2]
    count = max(1, int(share * h * w / PATCH ** 2))
    return (rng.integers(0, max(1, h - PATCH), size=count),
            rng.integers(0, max(1, w - PATCH), size=count))


def non_eccentricity(image, share, rng):
    """Patches of the image replaced by patches from up to 3 patch sides away, over about
    `share` of its area (KADID #20)."""
    h, w = image.shape[:2]
    out = image.copy()
    for y, x in zip(*_patch_corners(image, share, rng)):
        sy = int(np.clip(y + rng.integers(-3 * PATCH, 3 * PATCH + 1), 0, max(0, h - PATCH)))
        sx = int(np.clip(x + rng.integers(-3 * PATCH, 3 * PATCH + 1), 0, max(0, w - PATCH)))
        out[y:y + PATCH, x:x + PATCH] = image[sy:sy + PATCH, sx:sx + PATCH]
    return out


def colour_block(image, share, rng):
    """Patches of one random colour over about `share` of the area (KADID #23)."""
    out = image.copy()
    for y, x in zip(*_patch_corners(image, share, rng)):
        out[y:y + PATCH, x:x + PATCH] = rng.integers(0, 256, size=3, dtype=np.uint8)
    return out


def high_sharpen(image, percent, rng):
    """Over-sharpening: an unsharp mask of radius 3 at `percent` strength (KADID #24)."""
    del rng
    sharpened = Image.fromarray(image).filter(
        ImageFilter.UnsharpMask(radius=3, percent=int(percent), threshold=0))
    return np.asarray(sharpened)


# ---- acquisition: what a camera does to a photo as ISO, exposure and focus go wrong. In linear
# light (sRGB decoded), where a sensor's noise lives: shot noise grows with the signal, read
# noise does not, and demosaicing correlates both over neighbouring pixels.

def _to_linear(image):
    x = image.astype(np.float32) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _to_srgb(linear):
    x = np.clip(linear, 0.0, 1.0)
    return _to_uint8(255.0 * np.where(x <= 0.0031308, 12.92 * x,
                                      1.055 * np.power(x, 1 / 2.4) - 0.055))


def _sensor_noise(linear, gain, rng):
    """Shot (variance gain * signal) and read (sd gain / 4) noise, correlated over about a
    pixel as demosaicing leaves it."""
    sd = np.sqrt(gain * np.maximum(linear, 0.0) + (gain / 4) ** 2)
    noise = rng.normal(0.0, 1.0, linear.shape).astype(np.float32)
    # a 3-tap blur keeps 0.56 of white noise's sd: rescaled so `gain` stays the sensor's
    noise = ndimage.gaussian_filter(noise, sigma=(0.6, 0.6, 0)) / 0.56
    return linear + sd * noise


def sensor_noise(image, gain, rng):
    """High ISO: the sensor's noise at analogue `gain` (the variance per unit of linear
    signal), in linear light, colour and demosaic-correlated."""
    return _to_srgb(_sensor_noise(_to_linear(image), gain, rng))


def low_light(image, stops, rng):
    """Too little light: exposed `stops` under, the sensor's noise at that exposure, then
    brightened back by the camera (to within a third of the loss), shadows crushed."""
    dark = _to_linear(image) * 2.0 ** -stops
    noisy = _sensor_noise(dark, 0.0015, rng)
    quantised = np.round(np.clip(noisy, 0, 1) * 1023) / 1023  # a 10-bit raw's shadow steps
    return _to_srgb(quantised * 2.0 ** (stops * 2 / 3))


def overexposure(image, stops, rng):
    """Too much light: exposed `stops` over, highlights clipped in each channel."""
    del rng
    return _to_srgb(_to_linear(image) * 2.0 ** stops)


def camera_mix(image, level, rng):
    """A small camera at its limits, the defects together: defocus, sensor noise, JPEG; `level`
    1..5 raises all three."""
    blurred = lens_blur(image, 0.5 * level, rng)
    noisy = sensor_noise(blurred, 0.0006 * level ** 1.6, rng)
    return jpeg(noisy, int(80 - 13 * level), rng)


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
    # KADID-10k-style
    "lens_blur": (lens_blur, (1, 2, 4, 6, 9)),
    "motion_blur": (motion_blur, (3, 6, 10, 16, 25)),
    "colour_diffusion": (colour_diffusion, (1, 2, 4, 8, 16)),
    "colour_shift": (colour_shift, (1, 3, 6, 10, 16)),
    "colour_quantisation": (colour_quantisation, (64, 32, 16, 8, 4)),
    "oversaturation": (saturation_change, (1.5, 2.0, 3.0, 4.5, 6.0)),
    "wn_chroma": (white_noise_chroma, (0.001, 0.004, 0.012, 0.03, 0.08)),
    "multiplicative_noise": (multiplicative_noise, (0.005, 0.02, 0.05, 0.1, 0.25)),
    "denoise": (denoise, (0.002, 0.006, 0.015, 0.04, 0.1)),
    "brighten": (brighten, (1.2, 1.5, 2.0, 2.7, 3.6)),
    "darken": (darken, (1.2, 1.5, 2.0, 2.7, 3.6)),
    "jitter": (jitter, (1, 2, 3, 5, 8)),
    "non_eccentricity": (non_eccentricity, (0.05, 0.1, 0.2, 0.35, 0.5)),
    "colour_block": (colour_block, (0.01, 0.03, 0.06, 0.1, 0.16)),
    "high_sharpen": (high_sharpen, (100, 200, 350, 550, 800)),
    # acquisition (sensor, exposure, focus; lens_blur and motion_blur above too)
    "sensor_noise": (sensor_noise, (0.0005, 0.0015, 0.004, 0.01, 0.025)),
    "low_light": (low_light, (1.0, 2.0, 3.0, 4.0, 5.0)),
    "overexposure": (overexposure, (0.5, 1.0, 1.6, 2.3, 3.0)),
    "camera_mix": (camera_mix, (1, 2, 3, 4, 5)),
}

LIVE_DISTORTIONS = ("gblur", "wn", "jpeg", "jp2k")
# KADID-10k's 25 families in its order (#1 gaussian blur ... #25 contrast change)
KADID_DISTORTIONS = (
    "gblur", "lens_blur", "motion_blur", "colour_diffusion", "colour_shift",
    "colour_quantisation", "saturation", "oversaturation", "jp2k", "jpeg", "wn", "wn_chroma",
    "impulse", "multiplicative_noise", "denoise", "brighten", "darken", "mean_shift", "jitter",
    "non_eccentricity", "pixelate", "quantisation", "colour_block", "high_sharpen", "contrast")
LEVELS = 6  # pristine + five levels per family
# names that stand for a set of families wherever a list of families is asked for
# what a camera does as ISO, exposure, focus and steadiness go wrong (BIQ2021's ss02 kind)
CAMERA_DISTORTIONS = ("sensor_noise", "low_light", "overexposure", "lens_blur", "motion_blur",
                      "camera_mix")
# the families of the IQA datasets (LIVE, TID2013, KADID-10k): every family but the camera's own
DATASET_DISTORTIONS = tuple(sorted(set(DISTORTIONS) - set(CAMERA_DISTORTIONS)
                                   | {"lens_blur", "motion_blur"}))
FAMILY_SETS = {"all": tuple(sorted(DISTORTIONS)), "live": LIVE_DISTORTIONS,
               "kadid": KADID_DISTORTIONS, "camera": CAMERA_DISTORTIONS,
               "datasets": DATASET_DISTORTIONS}


def parse_families(text):
    """Families from a comma-separated list of names and set names (`FAMILY_SETS`), in order,
    each once; an unknown name raises `InputError` naming the choices."""
    families = []
    for name in (n.strip() for n in text.split(",") if n.strip()):
        for family in FAMILY_SETS.get(name, (name,)):
            get_distortion(family)
            if family not in families:
                families.append(family)
    if not families:
        raise InputError("no distortion family given")
    return tuple(families)


def get_distortion(kind):
    if kind not in DISTORTIONS:
        raise InputError(f"unknown distortion {kind!r}; choose from {sorted(DISTORTIONS)} or a "
                         f"set: {sorted(FAMILY_SETS)}")
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
