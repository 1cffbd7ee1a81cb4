"""Every way an image becomes network input: loading, training crops, evaluation views.

Kept side by side, as slim's ``preprocessing/*_preprocessing.py`` keep ``preprocess_for_train``
and ``preprocess_for_eval``, so that one policy serves training, validation, the probe,
``evaluate``, ``predict`` and the exports:

- **Loading** (`load_image`): Pillow, any format it reads, to uint8 RGB ``[H, W, 3]``; a file
  that does not decode completely raises `BadImageError` naming it. Folders expand with
  `list_files`.
- **Training** (TensorFlow ops inside tf.data): `decode_image`, `upscale_to` (bicubic, so the
  shorter side reaches the crop), `random_rescale`, one stateless random crop and flip per
  element (`crop_and_flip`; shared by every level of a ranking group, `crop_and_flip_group`).
- **Evaluation** (NumPy, `Views`): ``count`` square views of side ``crop`` placed by ``mode``:

  ============== ==========================================================================
  grid           spread evenly over the image; a single view is the centre
  random         corners drawn from `VIEW_SEED` (the same in every command)
  centre_random  the centre, then corners drawn from `VIEW_SEED` (stage one's held-out groups,
                 every level of a group with the same corners)
  pyramid        centre crops of a scale pyramid, native resolution down to the whole
                 picture shrunk to the crop
  ============== ==========================================================================

  Images smaller than the crop are upscaled first, bicubic, in both paths.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import stat
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from rankiqa import preprocess
from rankiqa.run import rundir
from rankiqa.errors import InputError

VIEW_MODES = preprocess.VIEW_MODES
AGGREGATES = ("mean", "median")  # how a photo's views' scores become its score
# The seed every image's random views are drawn with, in every command (predict, evaluate,
# validation, stage one's held-out groups, the probe, ladders): a photo gets the same views
# alone or in a folder, in any order, as a path or as pixels, and every level of a ranking
# group the same crops, so that they differ only in distortion.
VIEW_SEED = 0


class BadImageError(InputError):
    """A file is not an image Pillow can decode completely."""


# --------------------------------------------------------------------------- loading


# Pillow's own guard against decompression bombs (a small file claiming a huge picture); an
# image over it is a bad image like any other. `set_max_pixels` (the CLI's --max-pixels).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS


def set_max_pixels(limit):
    global MAX_PIXELS
    if limit < 1:
        raise InputError(f"--max-pixels must be >= 1, got {limit}")
    MAX_PIXELS = Image.MAX_IMAGE_PIXELS = int(limit)


_to_rgb = preprocess.to_rgb  # the one conversion, shared with served exports


_UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


@contextlib.contextmanager
def open_image(path):
    """Pillow's image of `path`, its size checked against `MAX_PIXELS` from the header alone;
    a failure to open it, or to decode it inside the block, is a `BadImageError` naming it."""
    problem = isinstance(path, (str, os.PathLike)) and not_a_regular_file(path)
    if problem and os.path.lexists(path):  # reading a FIFO or a device would block or never end
        raise BadImageError(problem)
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise BadImageError(f"{path}: {im.width}x{im.height} pixels, over the limit of "
                                    f"{MAX_PIXELS:,} (--max-pixels)")
            yield im
    except BadImageError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's own check, at twice the limit
        raise BadImageError(f"{path}: over the limit of {MAX_PIXELS:,} (--max-pixels): "
                            f"{e}") from None
    except _UNREADABLE as e:
        raise BadImageError(f"{path}: not a readable image ({e})") from None


def load_image(path, max_side=0):
    """uint8 RGB ``[H, W, 3]``, the longer side reduced to `max_side` (Lanczos) if > 0.

    Raises:
      BadImageError: a truncated, unreadable or non-image file, or one over `MAX_PIXELS`.
    """
    with open_image(path) as im:
        im.load()  # decode fully now: a truncated JPEG fails here, not later
        rgb = _to_rgb(im)
    h, w = rgb.shape[:2]
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.LANCZOS))
    return rgb


def as_image(item, k=0):
    """A path, a PIL image or a uint8 array (``[H, W, 3]``, or ``[H, W]`` grey) -> uint8
    ``[H, W, 3]``; `k` (its place in a list) names it in the error.

    Raises:
      BadImageError: a path that is not a readable image.
      InputError: anything else that is not an image.
    """
    if isinstance(item, (str, os.PathLike)):
        return load_image(os.fspath(item))
    if isinstance(item, Image.Image):
        return _to_rgb(item)
    array = np.asarray(item)
    if array.dtype == np.uint8 and array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3:
        return array
    raise InputError(f"image {k}: expected a path, a PIL image or a uint8 array [H, W, 3] (or "
                     f"[H, W] grey), got {array.dtype} {list(array.shape)}")


def image_size(path):
    """(width, height) from the header alone."""
    with open_image(path) as im:
        return im.size


# files a photo folder often holds beside its photos (a label file, notes, a video): in a folder
# they are left out by name, not tried and reported as unreadable images; named directly, tried
NOT_IMAGES = frozenset(
    ".csv .tsv .txt .json .yaml .yml .md .rst .xml .html .log .ini .toml .py .sh .npz .npy "
    ".mat .zip .tar .gz .xlsx .xls .ods .doc .docx .db .sqlite .mp4 .mov .avi .mkv .mp3 .wav "
    ".xmp .pp3 .dop".split())


def list_files(paths, ignored=None):
    """Expands files and folders (recursively, sorted, hidden entries skipped). Symbolic links
    to folders are followed, each folder listed once (a link back up is not a loop); a folder's
    files named as data rather than images (`NOT_IMAGES`: ``labels.csv``) are left out and
    appended to `ignored` when given.

    Returns:
      (files, problems): problems name each path that does not exist and each that is not a
      regular file (a FIFO or device would block the reader forever), which are skipped.
    """
    files, problems = [], []
    for path in paths:
        if os.path.isdir(path):
            seen = set()
            for root, dirs, names in os.walk(path, followlinks=True):
                real = os.path.realpath(root)
                if real in seen:
                    dirs[:] = []
                    continue
                seen.add(real)
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(n for n in names if not n.startswith(".")):
                    full = os.path.join(root, name)
                    if os.path.splitext(name)[1].lower() in NOT_IMAGES:
                        if ignored is not None:
                            ignored.append(full)
                        continue
                    problem = not_a_regular_file(full)
                    (problems if problem else files).append(problem or full)
        elif os.path.lexists(path):
            problem = not_a_regular_file(path)
            (problems if problem else files).append(problem or path)
        else:
            problems.append(f"{path}: no such file or folder")
    return files, problems


def not_a_regular_file(path):
    """Why `path` is not a file to read (a FIFO, a device, a socket, a broken link), or None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{path}: a broken symbolic link"
    except OSError as e:
        return f"{path}: {e.strerror}"
    if stat.S_ISREG(mode):
        return None
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or
            stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")
    return f"{path}: not a regular file ({kind})"


def read_path_list(path):
    """The image paths a text file lists, one per line (``#`` comments), relative to its folder.

    Raises:
      FileNotFoundError: listed files that do not exist (counted, the first three named).
    """
    root = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        listed = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    missing = [p for p in listed if not os.path.isfile(os.path.join(root, p))]
    if missing:
        raise FileNotFoundError(f"{path} lists {len(missing)} missing files, e.g. {missing[:3]}")
    return [os.path.join(root, p) for p in listed]


# --------------------------------------------------------------------------- training (TF)
# These import TensorFlow when they build ops: make-rank-data's worker processes load images
# through this module and would each pay ~5 s for an import they never use.


def decode_image(path):
    """Any format tf.io.decode_image reads (PNG, JPEG, BMP, GIF) -> uint8 ``[H, W, 3]``."""
    from rankiqa.compat import tf

    contents = tf.io.read_file(path)
    # JPEG with the accurate integer IDCT, the one Pillow's libjpeg uses: TensorFlow's default
    # (fast) IDCT differs from it by up to 4 grey levels, ~1 on average on BIQ2021's photos, so
    # training would see other pixels than scoring does. Costs nothing measurable next to the net.
    image = tf.cond(
        tf.io.is_jpeg(contents),
        lambda: tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False))
    image.set_shape([None, None, 3])
    return image


def upscale_to(image, size):
    """Upscales uint8 ``[H, W, 3]`` (bicubic, aspect kept, rounded) so its shorter side is at
    least `size`; larger images pass unchanged. The TF twin of `ensure_min_side`."""
    from rankiqa.compat import tf

    shape = tf.shape(image)
    short = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
    scale = tf.maximum(1.0, float(size) / short)
    new = tf.maximum(tf.cast(tf.math.ceil(tf.cast(shape[:2], tf.float32) * scale), tf.int32), size)
    resized = tf.compat.v2.image.resize(image, new, method="bicubic")  # v1: legacy pixel centres
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    return tf.cond(scale > 1.0, lambda: resized, lambda: image)


def random_rescale(image, crop_size, seed):
    """Shrinks ``[H, W, 3]`` by a log-uniform factor between 1 and crop / shorter side (the
    whole picture), drawn from the stateless `seed`: the range of scales ``pyramid`` views
    evaluate."""
    from rankiqa.compat import tf

    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    smallest = tf.math.log(float(crop_size) / tf.reduce_min(shape))
    scale = tf.exp(tf.random.stateless_uniform([], seed=seed + 2) * smallest)
    new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), crop_size)
    # antialias: shrinking without it would alias away the very detail quality depends on
    resized = tf.compat.v2.image.resize(image, new, antialias=True)  # v1 has no antialias
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _stateless_crop(image, crop_size, seed):
    """A square crop of ``[..., H, W, 3]`` at offsets drawn from the stateless ``[2]`` `seed`
    (the same for every leading index, i.e. every level of a group)."""
    from rankiqa.compat import tf

    shape = tf.shape(image)
    h, w = shape[-3], shape[-2]
    y = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=h - crop_size + 1,
                                    dtype=tf.int32)
    x = tf.random.stateless_uniform([], seed=seed + 1, minval=0, maxval=w - crop_size + 1,
                                    dtype=tf.int32)
    crop = image[..., y:y + crop_size, x:x + crop_size, :]
    crop.set_shape(image.shape.as_list()[:-3] + [crop_size, crop_size, 3])
    return crop


def _stateless_flip(image, seed):
    from rankiqa.compat import tf

    flip = tf.random.stateless_uniform([], seed=seed[::-1]) < 0.5
    return tf.cond(flip, lambda: tf.reverse(image, axis=[-2]), lambda: image)


def crop_and_flip(image, crop_size, seed, random_scale=False):
    """Training view of one image ``[H, W, 3]``: upscaled if small, shrunk by a random factor
    with `random_scale`, one random crop and horizontal flip, all drawn from the stateless
    ``[2]`` `seed` (so the result depends on the element, not on which thread drew first)."""
    image = upscale_to(image, crop_size)
    if random_scale:
        image = random_rescale(image, crop_size, seed)
    return _stateless_flip(_stateless_crop(image, crop_size, seed), seed)


def crop_and_flip_group(group, crop_size, seed):
    """Training view of a ranking group ``[levels, H, W, 3]``: the same crop and flip for every
    level, so the ranking is about distortion, not content."""
    crop = _stateless_crop(group, crop_size, seed)
    crop.set_shape([group.shape[0], crop_size, crop_size, 3])
    return _stateless_flip(crop, seed)


# --------------------------------------------------------------------------- evaluation


def ensure_min_side(image, size):
    """`rankiqa.preprocess.ensure_min_side` within `MAX_PIXELS`.

    Raises:
      BadImageError: the upscaled image would be over `MAX_PIXELS`.
    """
    try:
        return preprocess.ensure_min_side(image, size, MAX_PIXELS)
    except preprocess.TooLarge as e:
        raise BadImageError(str(e)) from None


def image_crops(image, crop, crops, mode="grid", seed=0):
    """``[crops, crop, crop, 3]`` uint8 views of one image (`rankiqa.preprocess.image_crops`,
    the code a served export runs too), the upscale within `MAX_PIXELS`.

    Raises:
      BadImageError: the upscaled image would be over `MAX_PIXELS`.
      InputError: an unknown mode.
    """
    if mode not in VIEW_MODES:
        raise InputError(f"unknown view mode {mode!r}; choose from {list(VIEW_MODES)}")
    try:
        return preprocess.image_crops(image, crop, crops, mode, seed, MAX_PIXELS)
    except preprocess.TooLarge as e:
        raise BadImageError(str(e)) from None


crop_corners = preprocess.crop_corners


def spec_views(path, specs, crop):
    """``[len(specs), crop, crop, 3]`` uint8: the photo at `path`, decoded once as every
    command decodes, viewed by each view spec ``(scale, y, x, flip)``
    (`rankiqa.preprocess.placed_view`).

    Raises:
      BadImageError: the photo cannot be read, or its upscale would be over `MAX_PIXELS`.
    """
    image = load_image(path)
    try:
        return np.stack([preprocess.placed_view(image, crop, *map(float, spec[:3]),
                                                float(spec[3]) >= 0.5, MAX_PIXELS)
                         for spec in specs])
    except preprocess.TooLarge as e:
        raise BadImageError(f"{path}: {e}") from None


@dataclass(frozen=True)
class Views:
    """How a model looks at an image at evaluation: `count` views of side `crop` by `mode`."""

    crop: int
    count: int = 1
    mode: str = "grid"

    def __post_init__(self):
        if self.mode not in VIEW_MODES:
            raise InputError(f"unknown view mode {self.mode!r}; choose from {list(VIEW_MODES)}")
        if self.count < 1 or self.crop < 1:
            raise InputError(f"views need at least one crop of at least one pixel, got "
                             f"{self.count} of {self.crop}")

    def apply(self, image, seed=VIEW_SEED):
        """``[count, crop, crop, 3]`` uint8 from one image ``[H, W, 3]``."""
        return image_crops(image, self.crop, self.count, self.mode, seed)

    def batch(self, paths):
        """The float32 batch ``[len(paths) * count, crop, crop, 3]`` (RGB, 0-255) an exported
        model (`rankiqa/images:0`) takes to score `paths` as `rankiqa predict` does: each
        image's views in a row (random ones drawn from `VIEW_SEED`). Average each consecutive
        `count` scores for one score per image."""
        stack = np.stack([self.apply(load_image(p)) for p in paths])
        return stack.reshape(-1, self.crop, self.crop, 3).astype(np.float32)

    def replace(self, crop=None, count=None, mode=None):
        """These views with the fields that are given (not None) replaced: a command's
        ``--crop-size``, ``--crops`` and ``--crop-mode`` over a model's own views."""
        given = {"crop": crop, "count": count, "mode": mode}
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})

    def as_dict(self):
        return {"crop": self.crop, "count": self.count, "mode": self.mode}

    def describe(self):
        return f"{self.count} {self.mode} views of {self.crop}²"


def from_config(data_cfg, count=None):
    """The evaluation `Views` of a data config (`rankiqa.config.MosDataConfig` or
    `RankDataConfig`): ``eval_crops`` (or `count`) views of side ``eval_crop_size`` (where the
    config has one and sets it) else ``crop_size``, placed by ``eval_crop_mode``."""
    crop = getattr(data_cfg, "eval_crop_size", 0) or data_cfg.crop_size
    return Views(crop, count or data_cfg.eval_crops, data_cfg.eval_crop_mode)


def from_dict(recorded, default_crop):
    """The `Views` a run folder's ``rankiqa.json`` records (``{"crop", "count", "mode"}``,
    each optional), the crop defaulting to `default_crop`."""
    return Views(int(recorded.get("crop") or default_crop), int(recorded.get("count", 1)),
                 recorded.get("mode", "grid"))


def _cache_file(list_file):
    key = hashlib.sha1(os.path.abspath(list_file).encode()).hexdigest()[:16]
    return rundir.cache_dir(f"checked-{key}.json")


def check_images(paths, list_file=None):
    """Decodes every image once (JPEGs at 1/8 scale: enough to find a truncated file, ~1 ms
    each) and returns ``{path: problem}`` for those that fail, so training names every bad
    file before its first step instead of failing mid-run on one. Files that passed are
    remembered (by size and modification time) per `list_file`, so a rerun checks only what
    changed."""
    cache_path = _cache_file(list_file) if list_file else None
    try:
        with open(cache_path) as f:
            passed = json.load(f)
    except (TypeError, OSError, ValueError):
        passed = {}
    problems, checked = {}, {}
    for path in paths:
        try:
            info = os.stat(path)
        except OSError as e:
            problems[path] = f"{path}: {e.strerror}"
            continue
        signature = [info.st_size, info.st_mtime_ns]
        if passed.get(path) == signature:
            checked[path] = signature
            continue
        try:
            with open_image(path) as im:
                if im.format == "JPEG":
                    im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
            checked[path] = signature
        except BadImageError as e:
            problems[path] = str(e)
    if cache_path:
        try:
            os.makedirs(os.path.dirname(cache_path), exist_ok=True)
            rundir.write_atomic(cache_path, json.dumps(checked))
        except OSError:
            pass  # a cache that cannot be written only costs the next run a re-check
    return problems


def refuse_or_skip(problems, skip_bad, what, log):
    """Raises `BadImageError` naming every bad image (the first ten), or with `skip_bad` logs
    them and returns their set for the caller to leave out."""
    if not problems:
        return set()
    listed = "; ".join(list(problems.values())[:10]) + (" ..." if len(problems) > 10 else "")
    if not skip_bad:
        raise BadImageError(f"{len(problems)} {what} images cannot be read: {listed}; fix or "
                            "remove them, or pass --skip-bad to train without them")
    for message in problems.values():
        log(f"skipped: {message}")
    return set(problems)


def usable_groups(groups, list_file, skip_bad, log):
    """The rank groups (`lists.RankGroup`) whose every image decodes: all are checked now, so a
    bad one is named before the first step; `refuse_or_skip` decides what a bad one does."""
    bad = refuse_or_skip(check_images([p for g in groups for p in g.paths], list_file),
                         skip_bad, "ranking", log)
    return [g for g in groups if not bad.intersection(g.paths)]
