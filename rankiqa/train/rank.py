"""Stage one, `rankiqa train-rank`: learn to rank synthetically distorted images.

Reads top to bottom: data (rank list -> train / held-out references -> tf.data), loss (one
shared backbone, one pass over references x levels, the ranking hinge), evaluation (held-out
rank accuracy); the rest (start, weight decay, loop) is `rankiqa.train.stage`.
"""

from typing import NamedTuple

from rankiqa import losses, metrics
from rankiqa.run import checks
from rankiqa.data import lists, pipeline
from rankiqa.data import images as images_lib
from rankiqa.preprocessing import views as views_lib
from rankiqa.errors import InputError
from rankiqa.siamese import one_pass_scores
from rankiqa.train import stage

def build_rank_evaluator(scorer, groups, log):
    """``eval_fn(session, step)``: held-out rank_accuracy (overall and per family), each
    image's score the mean over the scorer's views, the same views for every level."""
    if not groups:
        return None
    views = scorer.views
    # every level of a group gets the same views (`views_lib.VIEW_SEED`): the crops differ
    # only in distortion, and every evaluation (and every run) sees the same ones
    paths = [p for g in groups for p in g.paths]

    def eval_fn(sess, step):
        # decoded again at each evaluation (overlapped with the network): memory stays bounded
        all_scores = scorer.score_items(paths, session=sess).reshape(
            len(groups), -1)  # [groups, levels]
        per_family = {}
        for family in sorted({g.distortion for g in groups}):
            rows = [k for k, g in enumerate(groups) if g.distortion == family]
            per_family[family] = metrics.pair_accuracy(all_scores[rows])
        accuracy = metrics.pair_accuracy(all_scores)
        result = {"step": step, "rank_accuracy": accuracy, "per_distortion": per_family,
                  "held_out_references": sorted({g.reference for g in groups}),
                  "groups": len(groups), "crops": views.count, "crop_size": views.crop,
                  "views": views.as_dict(),
                  # each held-out image's score, best level first (the demo's report shows them)
                  "group_scores": [{"reference": g.reference, "distortion": g.distortion,
                                    "paths": list(g.paths), "scores": [float(v) for v in row]}
                                   for g, row in zip(groups, all_scores)]}
        log(f"held-out rank_accuracy {accuracy:.4f} at step {step} "
            f"({', '.join(f'{k} {v:.3f}' for k, v in per_family.items())})")
        return result

    return eval_fn


class RankData(NamedTuple):
    """What stage one's data step loads: the training batches and the held-out groups."""

    dataset: object
    images_per_step: int  # references x levels
    held_out: list  # `rankiqa.data.lists.RankGroup`s of the references kept out of training


def train(config, train_dir, device="auto", log=print, skip_bad=False):
    """Trains stage one as configured; resumes from `train_dir` when it holds a checkpoint.

    Args:
      config: `rankiqa.config.RankConfig`.
      train_dir: output directory (checkpoints, TensorBoard events, eval.json, rankiqa.json).
      device: auto | cpu | gpu.
      log: callable for progress lines.
      skip_bad: leave out the groups with an unreadable image instead of refusing them.

    Returns:
      dict from `loop.run_loop`, plus ``eval_path`` and ``restore_report``.
    """
    data_cfg, train_cfg = config.data, config.train
    checks.train_rank_config(config)  # the rank list is read below
    loss_fn = losses.get_rank_loss_fn(train_cfg.loss)
    views = views_lib.from_config(data_cfg)

    # ---- data: whole references held out, so accuracy is measured on unseen content
    def data(log):
        groups = lists.read_rank_list(data_cfg.rank_list, levels=data_cfg.levels,
                                      distortions=data_cfg.distortions)
        groups = images_lib.usable_groups(groups, data_cfg.rank_list, skip_bad, log)
        train_groups, held_out = lists.split_by_reference(
            groups, data_cfg.holdout_references, train_cfg.seed)
        if len(train_groups) < data_cfg.references_per_batch:
            raise InputError(f"{len(train_groups)} training groups cannot fill a batch of "
                             f"data.references_per_batch={data_cfg.references_per_batch}")
        pipeline.check_sizes(train_groups, data_cfg.crop_size)
        pipeline.check_sizes(held_out, views.crop)
        log(f"{len(train_groups)} training groups, {len(held_out)} held-out groups "
            f"({data_cfg.holdout_references} references)")
        # global batches: each replica gets whole references of every one
        dataset = pipeline.rank_dataset(
            train_groups, data_cfg.crop_size, data_cfg.references_per_batch,
            seed=train_cfg.seed, cache=data_cfg.cache_decoded,
            deterministic=train_cfg.deterministic)
        return RankData(dataset, data_cfg.references_per_batch * data_cfg.levels, held_out)

    # ---- loss: one backbone, one pass over its references x levels, the ranking hinge over
    # every ordered pair
    def loss(network_fn, images, data):
        scores, _ = one_pass_scores(network_fn, network_fn.preprocess(images), data_cfg.levels,
                                    is_training=not train_cfg.frozen_batch_norm)
        rank_loss = loss_fn(scores, train_cfg.margin)
        return rank_loss, {"loss": rank_loss, "rank_accuracy": losses.ranking_accuracy(scores)}

    return stage.train_stage(config, stage.Stage(
        name="rank", command="train-rank",
        batches=((data_cfg.references_per_batch, "data.references_per_batch"),), views=views,
        data=data, loss=loss, evaluation=lambda scorer, data, log: build_rank_evaluator(
            scorer, data.held_out, log),
        trainable=(train_cfg.trainable_scopes, "train.trainable_scopes"),
        best_key="rank_accuracy"), train_dir, device, log)
