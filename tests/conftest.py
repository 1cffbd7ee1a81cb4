"""Shared fixtures: small real photos (from scikit-image's bundled files) and ranking data."""

import os

import numpy as np
import pytest
from PIL import Image

from rankiqa.data import samples

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    """Six sample photos, longest side 96 px: enough texture to rank, small enough to be fast."""
    out = tmp_path_factory.mktemp("photos")
    for name in samples.SAMPLE_PHOTOS[:6]:
        with Image.open(os.path.join(samples.skimage_data_dir(), name)) as im:
            im = im.convert("RGB")
            im.thumbnail((96, 96), Image.LANCZOS)
            im.save(out / (os.path.splitext(name)[0] + ".png"))
    return str(out)


@pytest.fixture(scope="session")
def rank_data(photo_dir, tmp_path_factory):
    """make-rank-data output (LIVE families) for `photo_dir`; returns the rank list path."""
    from rankiqa.data.generate import make_rank_data

    out = tmp_path_factory.mktemp("rank") / "data"
    return make_rank_data(photo_dir, str(out), seed=0)["rank_list"]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def tiny_rank_overrides(rank_list, train_dir=None, **extra):
    """--set overrides for a seconds-long stage-one run on `rank_data`."""
    values = {
        "net.name": "resnet_v2_tiny", "data.rank_list": rank_list, "data.crop_size": 32,
        "data.images_per_batch": 2, "data.holdout_references": 2, "data.eval_crops": 2,
        "data.eval_crop_size": 48, "optim.optimizer": "adam", "optim.lr": 1e-3,
        "train.margin": 1.0, "train.max_steps": 6, "train.log_every": 2,
        "train.summary_every": 2, "train.save_every": 3, "train.eval_every": 3,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]
