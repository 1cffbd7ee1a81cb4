"""The main job on built-in data: sample photos -> ranking data -> stage one (held-out ranking
accuracy) -> stage two on MS-SSIM stand-in scores (validation SROCC/PLCC) -> ``report.png``
(`rankiqa.report`: the training curves and the held-out photos in the model's order).

Each step is skipped when its output already exists, and training resumes from its last
checkpoint, so rerunning the same command after an interruption continues where it stopped.
"""

import os

from rankiqa import config as config_lib
from rankiqa.run import rundir
from rankiqa.data import generate, samples
from rankiqa.data.lists import RANK_LIST_NAME

# shipped inside the package, so an installed rankiqa runs the demo from any folder
RANK_CONFIG = config_lib.shipped_config("rank_tiny")
FINETUNE_CONFIG = config_lib.shipped_config("finetune_tiny")


def run(work_dir, overrides=(), finetune_overrides=(), device="auto", log=print, notify=None):
    """Runs the demo in `work_dir`.

    Returns:
      dict: ``rank`` (stage one's eval.json plus eval_path), ``finetune`` (stage two's, with
      ``kept``: the step and figure of the checkpoint the run keeps as its model) and ``report``
      (the report's path and figures).
    """
    from rankiqa import report
    from rankiqa.data import lists, mos, standin
    from rankiqa.train import finetune, rank

    photos = os.path.join(work_dir, "photos")
    rank_data = os.path.join(work_dir, "rank_data")
    if not os.path.isdir(photos):
        # written aside and renamed, so a half-written folder is never taken for a finished one
        with rundir.writing(photos) as partial:
            samples.write_sample_photos(partial)
    log(f"sample photos: {photos}")
    listing = os.path.join(work_dir, "photos.txt")  # what `predict --from-list` reads
    if not os.path.isfile(listing):
        rundir.write_atomic(listing, "".join(
            os.path.join(photos, name) + "\n" for name in sorted(os.listdir(photos))))
    if not os.path.isfile(os.path.join(rank_data, RANK_LIST_NAME)):
        summary = generate.make_rank_data(photos, rank_data, seed=0, workers=os.cpu_count() or 1,
                                          force=True)
        log(f"ranking data: {summary['images']} images, {summary['groups']} groups")
    cfg = config_lib.load(config_lib.RankConfig, RANK_CONFIG,
                          [f"data.rank_list={os.path.join(rank_data, RANK_LIST_NAME)}", *overrides],
                          notify)
    train_dir = os.path.join(work_dir, "rank")
    result = rank.train(cfg, train_dir, device=device, log=log)
    out = {"rank": _read_eval(result["eval_path"])}

    # Stage two needs opinion scores; with no IQA dataset here, a full-reference metric stands in.
    labels = os.path.join(work_dir, "standin_mos.csv")
    if not os.path.isfile(labels):
        groups = lists.read_rank_list(os.path.join(rank_data, RANK_LIST_NAME))
        with rundir.writing(labels) as partial:
            mos.write_generic_csv(partial, standin.msssim_items(groups))
    log(f"stage two labels: {standin.STANDIN_NAME}: {labels}")
    ft_cfg = config_lib.load(config_lib.FinetuneConfig, FINETUNE_CONFIG,
                             [f"data.label_file={labels}", f"init.source={train_dir}",
                              *finetune_overrides], notify)
    ft_dir = os.path.join(work_dir, "finetune")
    result = finetune.train(ft_cfg, ft_dir, device=device, log=log)
    out["finetune"] = _read_eval(result["eval_path"])
    # the checkpoint the run keeps as its model (train.keep_best), which may be an earlier step
    out["finetune"]["kept"] = rundir.read_run_info(ft_dir).get("kept")
    path = os.path.join(work_dir, "report.png")
    out["report"] = {"path": path, **report.write_report(train_dir, path, "rankiqa demo")}
    log(f"report: {path}")
    return out


def _read_eval(path):
    evaluation = rundir.read_json(path)
    evaluation["eval_path"] = path
    return evaluation
