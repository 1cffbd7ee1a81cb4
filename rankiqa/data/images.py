"""Images from disk, checked: loading, listing and the checks that name every bad file.

- **Loading** (`load_image`): Pillow, any format it reads, to uint8 RGB ``[H, W, 3]`` (the one
  conversion, `rankiqa.preprocessing.preprocess.to_rgb`, shared with served exports); a file
  that does not decode completely, or is over `MAX_PIXELS`, raises `BadImageError` naming it.
- **Listing** (`list_files`, `read_path_list`): folders expand recursively; what is not a
  regular file (a FIFO would block the reader forever) is reported, never opened.
- **Checks** (`check_images`, `refuse_or_skip`, `usable_groups`): every training image decoded
  once before the first step, remembered per list file, so a bad one is named up front.

NumPy and Pillow only: make-rank-data's worker processes load images through this module.
"""

import contextlib
import hashlib
import json
import os
import stat

import numpy as np
from PIL import Image, UnidentifiedImageError

from rankiqa.errors import InputError
from rankiqa.preprocessing import preprocess
from rankiqa.run import rundir


class BadImageError(InputError):
    """A file is not an image Pillow can decode completely."""


# Pillow's own guard against decompression bombs (a small file claiming a huge picture); an
# image over it is a bad image like any other. `set_max_pixels` (the CLI's --max-pixels).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS


def set_max_pixels(limit):
    global MAX_PIXELS
    if limit < 1:
        raise InputError(f"--max-pixels must be >= 1, got {limit}")
    MAX_PIXELS = Image.MAX_IMAGE_PIXELS = int(limit)


_UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


@contextlib.contextmanager
def open_image(path, name=None):
    """Pillow's image of `path` (or a binary file object, then called `name` in errors), its
    size checked against `MAX_PIXELS` from the header alone; a failure to open it, or to
    decode it inside the block, is a `BadImageError` naming it."""
    label = path if name is None else name
    problem = isinstance(path, (str, os.PathLike)) and not_a_regular_file(path)
    if problem and os.path.lexists(path):  # reading a FIFO or a device would block or never end
        raise BadImageError(problem)
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise BadImageError(f"{label}: {im.width}x{im.height} pixels, over the limit of "
                                    f"{MAX_PIXELS:,} (--max-pixels)")
            yield im
    except BadImageError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's own check, at twice the limit
        raise BadImageError(f"{label}: over the limit of {MAX_PIXELS:,} (--max-pixels): "
                            f"{e}") from None
    except _UNREADABLE as e:
        raise BadImageError(f"{label}: not a readable image ({e})") from None


def load_image(path, max_side=0, name=None):
    """uint8 RGB ``[H, W, 3]``, the longer side reduced to `max_side` (Lanczos) if > 0;
    `path` may be a binary file object (an upload), called `name` in errors.

    Raises:
      BadImageError: a truncated, unreadable or non-image file, or one over `MAX_PIXELS`.
    """
    with open_image(path, name) as im:
        im.load()  # decode fully now: a truncated JPEG fails here, not later
        rgb = preprocess.to_rgb(im)
    h, w = rgb.shape[:2]
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.LANCZOS))
    return rgb


def load_rgb_image(path, name=None):
    """`load_image` (without `max_side`) as an RGB Pillow image
    (`rankiqa.preprocessing.preprocess.to_rgb_image`): views cut from it are the same, and
    come without two conversions of the whole photo (the scoring loop, P11).

    Raises:
      BadImageError: as `load_image`.
    """
    with open_image(path, name) as im:
        im.load()  # decode fully now: a truncated JPEG fails here, not later
        return preprocess.to_rgb_image(im)


def as_image(item, k=0, pillow=False):
    """A path, a PIL image or an array (``[H, W, 3]``, or ``[H, W]`` grey) -> uint8
    ``[H, W, 3]``; `k` (its place in a list) names it in the error. Arrays: uint8 as they
    are; integers in 0-255; floats in [0, 1] (scaled by 255) or, with a value above 1, in
    [0, 255] (`float_to_uint8`). With `pillow`, a path or a PIL image becomes an RGB Pillow
    image instead (`load_rgb_image`), for `rankiqa.preprocessing.views` to cut views from.

    Raises:
      BadImageError: a path that is not a readable image.
      InputError: anything else that is not an image, an empty one, or a float array whose
        range is unclear.
    """
    if isinstance(item, (str, os.PathLike)):
        return load_rgb_image(os.fspath(item)) if pillow else load_image(os.fspath(item))
    if isinstance(item, Image.Image):
        return preprocess.to_rgb_image(item) if pillow else preprocess.to_rgb(item)
    array = np.asarray(item)
    shaped = array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)
    if not shaped or array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        hint = (" (channels first? give [H, W, 3])" if array.ndim == 3 and array.shape[0] == 3
                else "")
        raise InputError(f"image {k}: expected a path, a PIL image or an array [H, W, 3] (or "
                         f"[H, W] grey), got {array.dtype} {list(array.shape)}{hint}")
    if array.size == 0:
        raise InputError(f"image {k}: an empty array {list(array.shape)}: nothing to score")
    if array.dtype != np.uint8:
        array = (float_to_uint8(array, k) if np.issubdtype(array.dtype, np.floating)
                 else int_to_uint8(array, k))
    return np.repeat(array[:, :, None], 3, axis=2) if array.ndim == 2 else array


def int_to_uint8(array, k):
    if array.min() < 0 or array.max() > 255:
        raise InputError(f"image {k}: {array.dtype} values {array.min()}-{array.max()} are "
                         "outside 0-255; give 8-bit values (uint8)")
    return array.astype(np.uint8)


def float_to_uint8(array, k):
    """A float image as uint8: values in [0, 1] are taken as [0, 1] (x 255), values up to 255
    with one above 1 as [0, 255]; rounded. Refused: non-finite values, values outside
    [0, 255], and an image of only 0s and 1s (a [0, 1] mask or a near-black [0, 255] image:
    which one is unknown)."""
    if not np.all(np.isfinite(array)):
        raise InputError(f"image {k}: {array.dtype} array holds NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise InputError(f"image {k}: {array.dtype} values {low:g}-{high:g} are outside both "
                         "[0, 1] and [0, 255]; scale it to one of them")
    if high <= 1 and np.all((array == 0) | (array == 1)):
        raise InputError(f"image {k}: {array.dtype} array of only 0s and 1s: its range, [0, 1] "
                         "or [0, 255], is unclear; give uint8 (x 255 for [0, 1])")
    scale = 255.0 if high <= 1 else 1.0
    return np.clip(np.rint(array.astype(np.float64) * scale), 0, 255).astype(np.uint8)


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
