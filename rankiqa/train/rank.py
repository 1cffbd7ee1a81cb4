"""Stage one, `rankiqa train-rank`: learn to rank synthetically distorted images.

Reads top to bottom: data (rank list -> train / held-out references -> tf.data), network (one
shared backbone, one pass over references x levels), start (`config.init`), loss (ranking hinge
+ weight decay), loop.
"""

import os

import numpy as np

from rankiqa import losses, metrics, nets, rundir
from rankiqa.compat import tf
from rankiqa.data import lists, pipeline
from rankiqa.data import views as views_lib
from rankiqa.errors import InputError
from rankiqa.scoring import Scorer
from rankiqa.siamese import one_pass_scores
from rankiqa.train import distribute, loop

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
            per_family[family] = metrics.rank_accuracy(all_scores[rows])
        accuracy = metrics.rank_accuracy(all_scores)
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


def train(config, train_dir, device="auto", log=print, skip_bad=False):
    """Trains stage one as configured; resumes from `train_dir` when it holds a checkpoint.

    Args:
      config: `rankiqa.config.RankConfig`.
      train_dir: output directory (checkpoints, TensorBoard events, eval.json, rankiqa.json).
      device: auto | cpu | gpu.
      log: callable for progress lines.
      skip_bad: leave out the groups with an unreadable image instead of refusing them.

    Returns:
      dict from `loop.run_loop`, plus ``eval_path``.
    """
    data_cfg, train_cfg = config.data, config.train
    if not data_cfg.rank_list:
        raise InputError("train-rank needs data.rank_list (make one with `rankiqa make-rank-data`)")
    network_fn = nets.get_network_fn(config.net.name, weight_decay=config.net.weight_decay,
                                     batch_norm_decay=config.net.batch_norm_decay,
                                     pooled_blocks=config.net.pooled_blocks)
    loss_fn = losses.get_rank_loss_fn(train_cfg.loss)
    views = views_lib.from_config(data_cfg)
    placement = loop.place(train_cfg, device)
    placement.check_divides(data_cfg.references_per_batch, "data.references_per_batch")
    log(f"training on {placement.describe()}")
    # one process per run folder: a second command on it is refused
    with loop.lock(train_dir, "train-rank", placement, log):
        loop.start_graph(train_dir, train_cfg)

        # ---- data: whole references held out, so accuracy is measured on unseen content
        groups = lists.read_rank_list(data_cfg.rank_list, levels=data_cfg.levels,
                                      distortions=data_cfg.distortions)
        groups = views_lib.usable_groups(groups, data_cfg.rank_list, skip_bad, log)
        train_groups, held_out = lists.split_by_reference(groups, data_cfg.holdout_references,
                                                          train_cfg.seed)
        if len(train_groups) < data_cfg.references_per_batch:
            raise InputError(f"{len(train_groups)} training groups cannot fill a batch of "
                             f"data.references_per_batch={data_cfg.references_per_batch}")
        pipeline.check_sizes(train_groups, data_cfg.crop_size)
        pipeline.check_sizes(held_out, views.crop)
        log(f"{len(train_groups)} training groups, {len(held_out)} held-out groups "
            f"({data_cfg.holdout_references} references)")
        # global batches: each replica gets whole references of every one
        dataset = pipeline.rank_dataset(train_groups, data_cfg.crop_size,
                                        data_cfg.references_per_batch, seed=train_cfg.seed,
                                        cache=data_cfg.cache_decoded,
                                        deterministic=train_cfg.deterministic)

        # ---- network, loss and step, on each replica: one backbone, one pass over its
        # references x levels, the ranking hinge over every ordered pair plus weight decay
        def replica_step(images):
            scores, _ = one_pass_scores(network_fn, network_fn.preprocess(images),
                                        data_cfg.levels,
                                        is_training=not train_cfg.frozen_batch_norm)
            rank_loss = loss_fn(scores, train_cfg.margin)
            regularization = tf.losses.get_regularization_loss()
            total_loss = tf.add(rank_loss, regularization, name="total_loss")
            variables_to_train, update_ops = loop.select_trainable(train_cfg.trainable_scopes,
                                                                   "train.trainable_scopes")
            train_op, learning_rate = loop.build_train_op(
                total_loss, config.optim, tf.train.get_or_create_global_step(),
                variables_to_train=variables_to_train, update_ops=update_ops,
                replicas=placement.replicas, parts=(rank_loss, regularization),
                loss_scaling=placement.loss_scaling)
            return train_op, {"loss": rank_loss, "total_loss": total_loss,
                              "learning_rate": learning_rate,
                              "rank_accuracy": losses.ranking_accuracy(scores)}

        train_op, scalars, input_init = distribute.build_step(placement, dataset, replica_step)

        with placement.scoring_scope():
            scorer = Scorer.in_graph(network_fn, views)
        with placement.scope():
            # ---- start: scratch, a pretrained package, or a checkpoint (head excluded)
            init_fn, _ = loop.build_init_fn(config.init, network_fn, log)

        # every worker evaluates (a session run all must make); the chief writes the result
        eval_fn = build_rank_evaluator(scorer, held_out, log)
        if placement.is_chief:
            rundir.write_run_info(train_dir, "rank", config, config.net.name, data_cfg.crop_size,
                                  views)

        # ---- loop
        result = loop.run_loop(
            train_dir, train_op, train_cfg.max_steps, train_cfg, scalars, placement,
            init_fn=init_fn, eval_fn=eval_fn, log=log, input_init=input_init,
            images_per_step=data_cfg.references_per_batch * data_cfg.levels)
        result["eval_path"] = os.path.join(train_dir, rundir.EVAL_NAME) if eval_fn else None
        return result
