"""Scoring images with a trained model: one graph, one restore, any number of batches.

Used by `evaluate`, `predict` and the export tools, so that they all preprocess and crop the
same way. The graph takes uint8-range RGB crops ``[None, crop, crop, 3]`` and applies the
network's own preprocessing inside, so callers never normalise pixels themselves.
"""

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from rankiqa import checkpoints, nets
from rankiqa.compat import tf
from rankiqa.train import loop

INPUT_NAME = "rankiqa/images"
OUTPUT_NAME = "rankiqa/score"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm")


class UnreadableImage(ValueError):
    """A file is not an image Pillow can decode completely."""


def load_image(path):
    """uint8 RGB ``[H, W, 3]``; a truncated or non-image file raises `UnreadableImage`."""
    try:
        with Image.open(path) as im:
            im.load()  # decode fully now: a truncated JPEG fails here, not later
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableImage(f"{path}: not a readable image ({e})") from None


def ensure_min_side(image, size):
    """Upscales (bicubic) so the shorter side is at least `size`; larger images pass as they are."""
    h, w = image.shape[:2]
    if min(h, w) >= size:
        return image
    scale = size / min(h, w)
    new = (max(size, int(np.ceil(w * scale))), max(size, int(np.ceil(h * scale))))
    return np.asarray(Image.fromarray(image).resize(new, Image.BICUBIC))


CROP_MODES = ("grid", "random", "pyramid")


def crop_corners(h, w, crop, crops, mode="grid", seed=0):
    """Top-left corners of `crops` square crops: ``grid`` spreads them evenly (a single crop is
    the centre), ``random`` draws them with `seed`."""
    if mode == "random":
        rng = np.random.default_rng(seed)
        return [(int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1)))
                for _ in range(crops)]
    if mode != "grid":
        raise ValueError(f"unknown crop mode {mode!r}; choose from {list(CROP_MODES)}")
    if crops == 1:
        return [((h - crop) // 2, (w - crop) // 2)]
    rows = int(np.floor(np.sqrt(crops)))
    cols = int(np.ceil(crops / rows))
    ys = np.linspace(0, h - crop, rows).round().astype(int)
    xs = np.linspace(0, w - crop, cols).round().astype(int)
    return [(int(y), int(x)) for y in ys for x in xs][:crops]


def pyramid_crops(image, crop, crops):
    """``crops`` centre crops of a scale pyramid: the first at native resolution, the last of the
    image shrunk so its shorter side is `crop` (the whole picture, for a square one), the others
    at geometrically spaced scales between. Fine detail (noise, blur, compression) shows at full
    resolution, composition and exposure in the whole picture; photos keep their subject near
    the centre, where off-centre crops often hold intentionally blurred background."""
    image = ensure_min_side(image, crop)
    h, w = image.shape[:2]
    views = []
    for scale in np.geomspace(1.0, crop / min(h, w), crops) if crops > 1 else [1.0]:
        size = (max(crop, int(round(w * scale))), max(crop, int(round(h * scale))))
        scaled = image if size == (w, h) else np.asarray(
            Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=None))
        (y, x), = crop_corners(scaled.shape[0], scaled.shape[1], crop, 1)  # the centre
        views.append(scaled[y:y + crop, x:x + crop])
    return np.stack(views)


def image_crops(image, crop, crops, mode="grid", seed=0):
    """``[crops, crop, crop, 3]`` uint8 from one image (upscaled first if it is too small):
    `mode` is one of `CROP_MODES` (``pyramid``: `pyramid_crops`)."""
    if mode == "pyramid":
        return pyramid_crops(image, crop, crops)
    image = ensure_min_side(image, crop)
    h, w = image.shape[:2]
    return np.stack([image[y:y + crop, x:x + crop]
                     for y, x in crop_corners(h, w, crop, crops, mode, seed)])


def build_scoring_graph(net_name):
    """Input placeholder (uint8-range floats) -> preprocessing -> network -> named score."""
    network_fn = nets.get_network_fn(net_name)
    images = tf.placeholder(tf.float32, [None, None, None, 3], name=INPUT_NAME)
    score, _ = network_fn(network_fn.preprocess(images), is_training=False)
    score = tf.identity(score, name=OUTPUT_NAME)
    return images, score, network_fn


def resolve_model(checkpoint, net=None):
    """(checkpoint prefix, net name, crop size) from a training directory or prefix."""
    prefix = checkpoints.resolve_checkpoint(checkpoint)
    folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(prefix)
    info = {}
    if os.path.isfile(os.path.join(folder, loop.RUN_INFO_NAME)):
        info = loop.read_run_info(folder)
    net_name = net or info.get("net")
    if net_name is None:
        raise ValueError(f"{checkpoint}: no {loop.RUN_INFO_NAME} beside it; pass --net to name "
                         "the network")
    crop = info.get("crop_size") or nets.get_network_fn(net_name).default_image_size
    return prefix, net_name, int(crop)


class Scorer:
    """Restores a model once and scores batches of crops.

    Args:
      checkpoint: training directory or checkpoint prefix (None with `weights`).
      net: network name when the checkpoint has no rankiqa.json beside it (required with
        `weights`).
      weights: an .npz / .npy dict from `export-npy` to load instead of a checkpoint.
      crop_size: crop side with `weights` (default: the network's default image size).
    """

    def __init__(self, checkpoint, net=None, device="auto", weights=None, crop_size=None):
        if weights is not None:
            if net is None:
                raise ValueError("scoring from --weights needs --net (the network name)")
            self.checkpoint, self.net_name = weights, net
            self.crop_size = crop_size or nets.get_network_fn(net).default_image_size
        else:
            self.checkpoint, self.net_name, self.crop_size = resolve_model(checkpoint, net)
        self.graph = tf.Graph()
        with self.graph.as_default(), tf.device(loop.get_device(device)):
            self.images, self.score, _ = build_scoring_graph(self.net_name)
            if weights is None:
                assignment, self.report = checkpoints.build_restore_map(
                    self.checkpoint, tf.global_variables(), ignore_missing_vars=False)
                saver = tf.train.Saver(var_list=assignment)
        self.session = tf.Session(graph=self.graph, config=loop.session_config())
        if weights is None:
            saver.restore(self.session, self.checkpoint)
            return
        from rankiqa.tools import export  # the arrays' loader lives with their writer

        with self.graph.as_default():
            self.session.run(tf.global_variables_initializer())
            self.report = export.init_from_arrays(self.session, export.load_arrays(weights))
        bad = self.report["missing"] + [n for n, _, _ in self.report["shape_mismatch"]]
        if bad:
            self.session.close()
            raise checkpoints.CheckpointError(
                f"{weights} does not fit {net}: {len(self.report['missing'])} variables missing, "
                f"{len(self.report['shape_mismatch'])} of another shape (e.g. {bad[:3]})")

    def score_batch(self, crops):
        """``crops: [N, H, W, 3]`` uint8 -> scores ``[N]``."""
        return self.session.run(self.score, {self.images: crops})

    def crop_scores(self, images, crops=1, mode="grid", seeds=None):
        """Scores ``[len(images), crops]`` in one run: `crops` crops of each image (uint8
        ``[H, W, 3]``), image k's random crops drawn with ``seeds[k]`` (default 0)."""
        seeds = seeds if seeds is not None else [0] * len(images)
        stacks = [image_crops(im, self.crop_size, crops, mode, seed)
                  for im, seed in zip(images, seeds)]
        return self.score_batch(np.concatenate(stacks)).reshape(len(images), crops)

    def score_images(self, images, crops=1, mode="grid", aggregate="mean", batch_size=32, seed=0):
        """One score per image: `crops` crops each, combined by mean or median."""
        if aggregate not in ("mean", "median"):
            raise ValueError(f"unknown aggregate {aggregate!r}; choose from ['mean', 'median']")
        per_batch = max(1, batch_size // crops)
        per_image = np.concatenate(
            [self.crop_scores(images[i:i + per_batch], crops, mode, [seed] * per_batch)
             for i in range(0, len(images), per_batch)] or [np.zeros((0, crops))])
        return per_image.mean(axis=1) if aggregate == "mean" else np.median(per_image, axis=1)

    def close(self):
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
