"""The main job on built-in data: sample photos -> ranking data -> stage one -> held-out accuracy.

Each step is skipped when its output already exists, and training resumes from its last
checkpoint, so rerunning the same command after an interruption continues where it stopped.
"""

import json
import os

from rankiqa import config as config_lib
from rankiqa.data import generate, samples
from rankiqa.data.lists import RANK_LIST_NAME

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
RANK_CONFIG = os.path.join(CONFIG_DIR, "rank_tiny.yaml")


def run(work_dir, overrides=(), device="auto", log=print):
    """Runs the demo in `work_dir`; returns stage one's eval result with ``eval_path``."""
    from rankiqa.train import rank

    photos = os.path.join(work_dir, "photos")
    rank_data = os.path.join(work_dir, "rank_data")
    if not os.path.isdir(photos):
        # written aside and renamed, so a half-written folder is never taken for a finished one
        partial = photos + ".partial"
        samples.write_sample_photos(partial)
        os.replace(partial, photos)
    log(f"sample photos: {photos}")
    if not os.path.isfile(os.path.join(rank_data, RANK_LIST_NAME)):
        summary = generate.make_rank_data(photos, rank_data, seed=0, workers=os.cpu_count() or 1,
                                          force=True)
        log(f"ranking data: {summary['images']} images, {summary['groups']} groups")
    cfg = config_lib.load(config_lib.RankConfig, RANK_CONFIG,
                          [f"data.rank_list={os.path.join(rank_data, RANK_LIST_NAME)}", *overrides])
    train_dir = os.path.join(work_dir, "rank")
    result = rank.train(cfg, train_dir, device=device, log=log)
    with open(result["eval_path"]) as f:
        evaluation = json.load(f)
    evaluation["eval_path"] = result["eval_path"]
    return evaluation
