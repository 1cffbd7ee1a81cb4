"""Readers on the real data in ../shared (skipped cleanly where it is absent)."""

import os

import pytest

from rankiqa import config as config_lib
from rankiqa.data import mos

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
BIQ = os.path.join(SHARED, "biq2021-train", "mos.csv")
KODAK = os.path.join(SHARED, "kodak")


@pytest.mark.shared_data
@pytest.mark.skipif(not os.path.isfile(BIQ), reason="../shared/data/biq2021-train is absent")
def test_biq2021_training_labels_load_with_their_odd_names():
    items = mos.read_dataset("biq2021", BIQ)
    assert len(items) == 3000
    assert any(" (" in os.path.basename(it.path) for it in items)
    assert all(0.0 <= it.score <= 1.0 and os.path.isfile(it.path) for it in items)
    parts = mos.split(items, 0.2, seed=2021)
    assert len(parts["val"]) == 600 and not {i.path for i in parts["val"]} & {
        i.path for i in parts["train"]}


@pytest.mark.shared_data
@pytest.mark.skipif(not os.path.isdir(KODAK), reason="../shared/data/kodak is absent")
def test_kodak_references_make_rank_data(tmp_path):
    from rankiqa.data.generate import make_rank_data

    src = tmp_path / "two"
    src.mkdir()
    for name in ("kodim01.png", "kodim23.png"):
        (src / name).write_bytes(open(os.path.join(KODAK, name), "rb").read())
    summary = make_rank_data(str(src), str(tmp_path / "out"), ["jpeg", "contrast"], max_side=256)
    assert summary["groups"] == 4 and summary["images"] == 2 + 2 * 2 * 5


def test_biq2021_recipe_config_loads():
    path = os.path.join(os.path.dirname(__file__), "..", "configs", "finetune_biq2021.yaml")
    cfg = config_lib.load(config_lib.FinetuneConfig, path)
    assert cfg.data.dataset == "biq2021" and cfg.net.name == "resnet_v2_50"
