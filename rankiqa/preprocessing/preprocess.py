"""How an image becomes a rankiqa model's input: NumPy and Pillow only, no rankiqa import.

This one file is what a served export needs beside ONNX Runtime or TensorFlow: copy it next to
the model and its ``preprocess.json`` (written by every graph export), and

    spec = preprocess.load_spec("mine.onnx.preprocess.json", "mine.onnx")  # checked to match
    session = onnxruntime.InferenceSession("mine.onnx", providers=["CPUExecutionProvider"])
    batch = preprocess.batch(["photo.jpg"], spec)  # [photos * views, crop, crop, 3]
    views = session.run([spec["output"]["name"]], {spec["input"]["name"]: batch})[0]
    print(preprocess.per_image(views, spec))  # one score per photo: predict's

(docs/data-formats.md, "Serving without rankiqa") gives `rankiqa predict`'s scores (tested for
every export kind). rankiqa itself places its
views with these functions (`rankiqa.preprocessing.views`), so the two cannot drift apart.

Views: ``count`` square views of side ``crop`` placed by ``mode``: grid (spread evenly; one
view is the centre), random (corners drawn from ``seed``), centre_random (the centre, then
random ones), pyramid (centre crops of a scale pyramid from native resolution down to the whole
picture shrunk to the crop, bilinear). An image smaller than the crop is upscaled first
(bicubic) so its shorter side reaches it.
"""

import hashlib
import json

import numpy as np
from PIL import Image

VIEW_MODES = ("grid", "random", "pyramid", "centre_random")


class TooLarge(ValueError):
    """Upscaling an image to the view would exceed the pixel limit."""


class NotItsModel(ValueError):
    """A ``preprocess.json`` that does not describe the model file beside it."""


def load_spec(spec_path, model_path):
    """The ``preprocess.json`` at `spec_path`, checked to describe the model file at
    `model_path` by the SHA-256 the export recorded (``model_sha256``): an export cut short,
    or a model replaced without its spec, raises `NotItsModel` rather than serving one model
    with another's views and scale."""
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    digest = file_sha256(model_path)
    if spec.get("model_sha256") != digest:
        raise NotItsModel(f"{spec_path} does not describe {model_path} (its model_sha256 is "
                          f"{spec.get('model_sha256')}, the file's {digest}); export the "
                          "model again")
    return spec


def file_sha256(path):
    """The SHA-256 of a file, read in blocks (what an export records as ``model_sha256``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def to_rgb(im):
    """Pillow image -> uint8 RGB ``[H, W, 3]``. 16- and 32-bit grey keep their top 8 bits, as
    TensorFlow's decoder does (Pillow's convert would clip them to white); palette, grey, CMYK
    and alpha images convert as Pillow does. EXIF orientation is not applied: images are scored
    as stored."""
    if im.mode.startswith("I;16") or im.mode == "I":
        grey = np.asarray(im).astype(np.int64)
        top = 8 if im.mode.startswith("I;16") or grey.max() < 65536 else 24
        grey = np.clip(grey >> top, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))


def to_rgb_image(im):
    """`to_rgb` as a Pillow RGB image, a copy that outlives `im`: the views are cut from it
    without a round trip through NumPy (Pillow keeps RGB as 4 bytes a pixel; the two
    whole-photo conversions cost 0.3 of the 2.6 ms a 512² photo's decoding and views take,
    BENCHMARKS.md P11). The views are the same either way."""
    if im.mode.startswith("I;16") or im.mode == "I":
        return Image.fromarray(to_rgb(im))
    return im.convert("RGB")


def _height_width(image):
    """(h, w) of an ``[H, W, 3]`` array or of a Pillow image."""
    return image.shape[:2] if isinstance(image, np.ndarray) else image.size[::-1]


def _as_pillow(image):
    return Image.fromarray(image) if isinstance(image, np.ndarray) else image


def ensure_min_side(image, size, max_pixels=None):
    """Upscales (bicubic) so the shorter side is at least `size`; larger images pass as they are.
    `image`: an ``[H, W, 3]`` uint8 array, or an RGB Pillow image (`to_rgb_image`); the result
    is of the same kind.

    Raises:
      TooLarge: the upscaled image would be over `max_pixels` (a 4 x 2,000,000 strip made 64
        pixels high is 2 G pixels).
    """
    h, w = _height_width(image)
    if min(h, w) >= size:
        return image
    scale = size / min(h, w)
    new = (max(size, int(np.ceil(w * scale))), max(size, int(np.ceil(h * scale))))
    if max_pixels is not None and new[0] * new[1] > max_pixels:
        raise TooLarge(f"{w}x{h} pixels: upscaling its shorter side to the view's {size} would "
                       f"make {new[0]}x{new[1]}, over the limit of {max_pixels:,} "
                       "(--max-pixels)")
    upscaled = _as_pillow(image).resize(new, Image.BICUBIC)
    return np.asarray(upscaled) if isinstance(image, np.ndarray) else upscaled


def crop_corners(h, w, crop, crops, mode="grid", seed=0):
    """Top-left corners ``[(y, x)] * crops`` of square crops in an ``h x w`` image, placed by
    `mode` (``grid``, ``random`` or ``centre_random``)."""
    if mode in ("random", "centre_random"):
        rng = np.random.default_rng(seed)
        corners = [((h - crop) // 2, (w - crop) // 2)] if mode == "centre_random" else []
        while len(corners) < crops:
            corners.append((int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))))
        return corners
    if mode != "grid":
        raise ValueError(f"unknown view mode {mode!r}; choose from {list(VIEW_MODES)}")
    if crops == 1:
        return [((h - crop) // 2, (w - crop) // 2)]
    rows = int(np.floor(np.sqrt(crops)))
    cols = int(np.ceil(crops / rows))
    ys = np.linspace(0, h - crop, rows).round().astype(int)
    xs = np.linspace(0, w - crop, cols).round().astype(int)
    return [(int(y), int(x)) for y in ys for x in xs][:crops]


def pyramid_crops(image, crop, crops, max_pixels=None):
    """``crops`` centre crops of a scale pyramid: the first at native resolution, the last of the
    image shrunk so its shorter side is `crop` (the whole picture, for a square one), the others
    at geometrically spaced scales between. Fine detail (noise, blur, compression) shows at full
    resolution, composition and exposure in the whole picture; photos keep their subject near
    the centre, where off-centre crops often hold intentionally blurred background."""
    image = ensure_min_side(image, crop, max_pixels)  # once, not per view
    return np.stack([placed_view(image, crop, k / (crops - 1) if crops > 1 else 0.0)
                     for k in range(crops)])


def placed_view(image, crop, scale, y=0.5, x=0.5, flip=False, max_pixels=None):
    """One ``[crop, crop, 3]`` uint8 view of `image` by a view spec (what ``rankiqa teach``
    records for each view it scores, so that training can place the very same view):
    `scale` in [0, 1] says how far the image is shrunk, from native resolution (0) to its
    shorter side at `crop` (1, the whole picture), geometrically between; `y`, `x` in [0, 1]
    where the crop sits (0.5, 0.5: the centre, as `pyramid_crops` places it); `flip` mirrors
    it left to right. ``pyramid`` view k of n is ``scale = k / (n - 1)`` at the centre
    (`pyramid_crops`). `image`: an array or an RGB Pillow image (`ensure_min_side`)."""
    image = ensure_min_side(image, crop, max_pixels)
    h, w = _height_width(image)
    factor = (crop / min(h, w)) ** scale
    size = (max(crop, int(round(w * factor))), max(crop, int(round(h * factor))))
    scaled = image if size == (w, h) else _as_pillow(image).resize(size, Image.BILINEAR,
                                                                    reducing_gap=None)
    # floor: y = x = 0.5 gives crop_corners' centre, (h - crop) // 2, for odd margins too
    scaled_h, scaled_w = _height_width(scaled)
    top = int(np.floor(y * (scaled_h - crop)))
    left = int(np.floor(x * (scaled_w - crop)))
    view = (scaled[top:top + crop, left:left + crop] if isinstance(scaled, np.ndarray) else
            np.asarray(scaled.crop((left, top, left + crop, top + crop))))
    return view[:, ::-1] if flip else view


def image_crops(image, crop, crops, mode="grid", seed=0, max_pixels=None):
    """``[crops, crop, crop, 3]`` uint8 views of one image, an array or an RGB Pillow image
    (upscaled first if it is too small)."""
    if mode == "pyramid":
        return pyramid_crops(image, crop, crops, max_pixels)
    image = np.asarray(ensure_min_side(image, crop, max_pixels))
    h, w = image.shape[:2]
    return np.stack([image[y:y + crop, x:x + crop]
                     for y, x in crop_corners(h, w, crop, crops, mode, seed)])


def batch(images, spec, max_pixels=None):
    """The float32 batch ``[len(images) * count, crop, crop, 3]`` (RGB, 0-255) the exported
    model takes, each image's views in a row, as `spec` (a ``preprocess.json``) says; images
    are paths or Pillow images.

    `max_pixels` bounds what an image may be upscaled to (default: Pillow's own decompression
    bomb limit, `Image.MAX_IMAGE_PIXELS`, what rankiqa uses): a 4 x 2,000,000 strip, 23 KB
    as a PNG, would otherwise ask for tens of GB to bring its short side up to the crop.
    Over it, `TooLarge` names the sizes: a server taking uploads refuses that one image."""
    if max_pixels is None:
        max_pixels = Image.MAX_IMAGE_PIXELS
    views = spec["views"]
    stack = []
    for item in images:
        if isinstance(item, Image.Image):
            rgb = to_rgb_image(item)
        else:
            with Image.open(item) as im:
                rgb = to_rgb_image(im)
        stack.append(image_crops(rgb, views["crop"], views["count"], views["mode"],
                                 views["seed"], max_pixels))
    return np.concatenate(stack).astype(np.float32)


def per_image(scores, spec):
    """One score per image from the model's per-view scores: the mean of each image's
    ``count`` consecutive ones."""
    return np.asarray(scores, np.float64).reshape(-1, spec["views"]["count"]).mean(axis=1)
