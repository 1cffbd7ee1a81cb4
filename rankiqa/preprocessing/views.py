"""Evaluation views: how a model looks at a photo when it is scored (slim's
``preprocess_for_eval``), in NumPy, the same code a served export runs
(`rankiqa.preprocessing.preprocess`) within this machine's `rankiqa.data.images.MAX_PIXELS`.

`Views` are ``count`` square views of side ``crop`` placed by ``mode``:

============== ==========================================================================
grid           spread evenly over the image; a single view is the centre
random         corners drawn from `VIEW_SEED` (the same in every command)
centre_random  the centre, then corners drawn from `VIEW_SEED` (stage one's held-out groups,
               every level of a group with the same corners)
pyramid        centre crops of a scale pyramid, native resolution down to the whole
               picture shrunk to the crop
============== ==========================================================================

Images smaller than the crop are upscaled first, bicubic, as training's crops are
(`rankiqa.preprocessing.training.upscale_to`).
"""

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from rankiqa.data import images
from rankiqa.data.images import BadImageError
from rankiqa.errors import InputError
from rankiqa.preprocessing import preprocess

VIEW_MODES = preprocess.VIEW_MODES
AGGREGATES = ("mean", "median")  # how a photo's views' scores become its score
# The seed every image's random views are drawn with, in every command (predict, evaluate,
# validation, stage one's held-out groups, the probe, ladders): a photo gets the same views
# alone or in a folder, in any order, as a path or as pixels, and every level of a ranking
# group the same crops, so that they differ only in distortion.
VIEW_SEED = 0


def ensure_min_side(image, size):
    """`rankiqa.preprocessing.preprocess.ensure_min_side` within `rankiqa.data.images.MAX_PIXELS`.

    Raises:
      BadImageError: the upscaled image would be over `rankiqa.data.images.MAX_PIXELS`.
    """
    try:
        return preprocess.ensure_min_side(image, size, images.MAX_PIXELS)
    except preprocess.TooLarge as e:
        raise BadImageError(str(e)) from None


def image_crops(image, crop, crops, mode="grid", seed=0):
    """``[crops, crop, crop, 3]`` uint8 views of one image (`rankiqa.preprocessing.preprocess.image_crops`,
    the code a served export runs too), the upscale within `rankiqa.data.images.MAX_PIXELS`.

    Raises:
      BadImageError: the upscaled image would be over `rankiqa.data.images.MAX_PIXELS`.
      InputError: an unknown mode.
    """
    if mode not in VIEW_MODES:
        raise InputError(f"unknown view mode {mode!r}; choose from {list(VIEW_MODES)}")
    try:
        return preprocess.image_crops(image, crop, crops, mode, seed, images.MAX_PIXELS)
    except preprocess.TooLarge as e:
        raise BadImageError(str(e)) from None



def spec_views(path, specs, crop):
    """``[len(specs), crop, crop, 3]`` uint8: the photo at `path`, decoded once as every
    command decodes, viewed by each view spec (`PlacedViews`).

    Raises:
      BadImageError: the photo cannot be read, or its upscale would be over
        `rankiqa.data.images.MAX_PIXELS`.
    """
    image = images.load_image(path)  # its own error names the path already
    try:
        return PlacedViews(crop, tuple(map(tuple, specs))).apply(image)
    except BadImageError as e:
        raise BadImageError(f"{path}: {e}") from None


@dataclass(frozen=True)
class PlacedViews:
    """Views of one photo each placed by a view spec ``(scale, y, x, flip)``
    (`rankiqa.preprocessing.preprocess.placed_view`): a teacher's views (`rankiqa teach`), which
    a student then sees as the teacher saw them. Scored like `Views` (`apply`, `count`), one
    photo's at a time (`Viewed`)."""

    crop: int
    specs: tuple

    @property
    def count(self):
        return len(self.specs)

    def apply(self, image, seed=VIEW_SEED):
        """``[count, crop, crop, 3]`` uint8 from one image ``[H, W, 3]`` (or its RGB Pillow
        image, `rankiqa.data.images.load_rgb_image`: the same views).

        Raises:
          BadImageError: its upscale would be over `rankiqa.data.images.MAX_PIXELS`.
        """
        try:
            return np.stack([preprocess.placed_view(image, self.crop, *map(float, spec[:3]),
                                                    float(spec[3]) >= 0.5, images.MAX_PIXELS)
                             for spec in self.specs])
        except preprocess.TooLarge as e:
            raise BadImageError(str(e)) from None


class Viewed(NamedTuple):
    """An item to score (a path, a PIL image or an array) with views of its own, where the
    items of one call are viewed differently (`rankiqa.serve.scoring.Scorer.iter_scores`)."""

    item: object
    views: object


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
        """``[count, crop, crop, 3]`` uint8 from one image ``[H, W, 3]`` (or its RGB Pillow
        image, `rankiqa.data.images.load_rgb_image`: the same views)."""
        return image_crops(image, self.crop, self.count, self.mode, seed)

    def batch(self, paths):
        """The float32 batch ``[len(paths) * count, crop, crop, 3]`` (RGB, 0-255) an exported
        model (`rankiqa/images:0`) takes to score `paths` as `rankiqa predict` does: each
        image's views in a row (random ones drawn from `VIEW_SEED`). Average each consecutive
        `count` scores for one score per image."""
        stack = np.stack([self.apply(images.load_image(p)) for p in paths])
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
