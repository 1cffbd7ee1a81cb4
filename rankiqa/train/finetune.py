"""Stage two, `rankiqa finetune`: transfer the ranking network to real quality scores.

Reads top to bottom: data (label file -> seeded split -> tf.data; optionally rank groups
beside it), loss (the same backbone, a fresh head: L2/L1 on scores normalised to [0, 1], higher
better, plus optionally stage one's ranking hinge on the rank groups), probe (optional: the head
fitted on frozen features). The start (`config.init`: the stage-one run minus the head, a
pretrained package, or scratch), weight decay and the loop are `rankiqa.train.stage`, shared
with stage one.
"""

import dataclasses
import os

import numpy as np

from rankiqa import checks, losses, metrics
from rankiqa.compat import slim, tf
from rankiqa.data import lists, mos, pipeline
from rankiqa.data import views as views_lib
from rankiqa.errors import InputError
from rankiqa.train import probe, stage

PROBE_REPORT_NAME = "probe.json"
SCORE_SCALE = "normalised to [0, 1], higher is better"


def build_mos_evaluator(scorer, items, log):
    """``eval_fn(session, step)``: SROCC/PLCC/... on `items`, each the mean score of the
    scorer's views, inference mode."""
    if not items:
        return None
    paths, targets = [it.path for it in items], np.array([it.score for it in items])

    def eval_fn(sess, step):
        # decoded again at each evaluation (overlapped with the network): memory stays bounded
        predicted = scorer.score_items(paths, session=sess)
        result = metrics.summary(predicted, targets)
        result.update(step=step, crops=scorer.views.count, views=scorer.views.as_dict())
        log(f"validation srocc {result['srocc']:.4f}"
            f"{metrics.describe_interval(result['srocc_ci'])} plcc {result['plcc']:.4f}"
            f"{metrics.describe_interval(result['plcc_ci'])} ({len(items)} images, 95 % "
            f"intervals) at step {step}")
        return result

    return eval_fn


def load_rank_groups(rank_list, crop_size, skip_bad, log):
    """The groups of `rank_list` for the second loss (and the ranking-aware probe), every image
    checked now."""
    groups = views_lib.usable_groups(lists.read_rank_list(rank_list), rank_list, skip_bad, log)
    if not groups:
        raise InputError(f"{rank_list}: no rank group left")
    pipeline.check_sizes(groups, crop_size)
    log(f"second loss: ranking on {len(groups)} groups of {rank_list}")
    return groups


def train(config, train_dir, device="auto", log=print, skip_bad=False):
    """Fine-tunes as `config` (`rankiqa.config.FinetuneConfig`; ``init.source``: where a fresh
    run starts) says into `train_dir`, resuming from its checkpoint; `skip_bad` leaves out
    unreadable images. Returns `rankiqa.train.stage.train_stage`'s result."""
    data_cfg, transfer = config.data, config.finetune
    checks.finetune_config(config)  # the files are read just below
    views = views_lib.from_config(data_cfg)  # checked before minutes of training
    loss_fn = losses.get_regression_loss_fn(config.train.loss)
    rank_loss_fn = losses.get_rank_loss_fn(transfer.rank_loss) if transfer.rank_list else None
    parts, rank_groups = {}, []

    # ---- data: a seeded split (by reference where the dataset has them), rank groups beside
    def data(log):
        nonlocal transfer
        parts.update(load_parts(data_cfg, skip_bad, log))
        rank_groups[:] = (load_rank_groups(transfer.rank_list, data_cfg.crop_size, skip_bad, log)
                          if transfer.rank_list else [])
        if transfer.probe_rank_rule == "labels" and transfer.rank_list and transfer.probe:
            weight = probe.weight_for_labels(len(parts["train"]))
            transfer = dataclasses.replace(transfer, probe_rank_weight=weight)
            log(f"probe: ranking weight {weight:.3g} for {len(parts['train'])} labelled training "
                "photos (finetune.probe_rank_rule: labels; docs/label-efficiency.md)")
        return build_dataset(config, parts["train"], rank_groups), data_cfg.batch_size

    # ---- loss: regression on normalised scores by a fresh one-score head, plus stage one's
    # ranking hinge on the rank groups, scored in the same pass
    def loss(network_fn, batch):
        levels = len(rank_groups[0].paths) if rank_groups else 0
        (images, targets), rank_images = batch if levels else (batch, None)
        if levels:
            images = tf.concat([images, rank_images], axis=0)
        scores, _ = network_fn(network_fn.preprocess(images),
                               is_training=not transfer.frozen_batch_norm)
        regression_loss = loss_fn(scores[:tf.shape(targets)[0]], targets)
        if not levels:
            return regression_loss, {"loss": regression_loss}
        rank_scores = tf.reshape(scores[tf.shape(targets)[0]:], [-1, levels])
        rank_loss = rank_loss_fn(rank_scores, transfer.rank_margin)
        return regression_loss + transfer.rank_weight * rank_loss, {
            "loss": regression_loss, "rank_loss": rank_loss,
            "rank_accuracy": losses.ranking_accuracy(rank_scores)}

    # ---- the probe: the head fitted on the frozen features of the restored backbone, last
    def probe_init(scorer, network_fn, train_dir, chief, log):
        train_items = parts["train"]
        return probe.build_probe_init(
            scorer, [it.path for it in train_items], [it.score for it in train_items],
            slim.get_model_variables(scope=network_fn.head_scope), transfer,
            views.replace(count=transfer.probe_crops), config.train.seed, log,
            os.path.join(train_dir, PROBE_REPORT_NAME) if chief else None,
            rank_groups=rank_groups if transfer.probe_rank_weight else None)

    batches = ((data_cfg.batch_size, "data.batch_size"),) + (
        ((transfer.rank_references_per_batch, "finetune.rank_references_per_batch"),)
        if transfer.rank_list else ())
    return stage.train_stage(config, stage.Stage(
        name="finetune", command="finetune", batches=batches, views=views, data=data, loss=loss,
        evaluation=lambda scorer, log: build_mos_evaluator(scorer, parts["val"], log),
        trainable=(transfer.trainable_scopes, "finetune.trainable_scopes"),
        head_lr_multiplier=transfer.head_lr_multiplier,
        extra_init=probe_init if transfer.probe else None, eval_at_start=True,
        run_info={"init": config.init.source, "score": SCORE_SCALE}, best_key="srocc"),
        train_dir, device, log)


def load_parts(data_cfg, skip_bad, log):
    """The seeded split of the labelled images, every image decoded once now so that a bad one
    is named before the first step (`views.refuse_or_skip` decides what it does)."""
    parts = mos.load_splits(data_cfg)
    bad = views_lib.refuse_or_skip(
        views_lib.check_images([it.path for it in parts["all"]], data_cfg.label_file),
        skip_bad, "labelled", log)
    parts = {k: [it for it in v if it.path not in bad] for k, v in parts.items()}
    if len(parts["val"]) == 1:  # refused now, not after training, at its first evaluation
        raise InputError(f"the validation part holds 1 image of {len(parts['all'])}; its "
                         "correlations need at least 2: raise data.val_fraction (now "
                         f"{data_cfg.val_fraction:g}), or set it to 0 for no validation")
    if len(parts["train"]) < data_cfg.batch_size:
        raise InputError(f"{len(parts['train'])} training images cannot fill data.batch_size="
                         f"{data_cfg.batch_size}")
    log(f"{data_cfg.dataset}: {len(parts['train'])} training, {len(parts['val'])} validation, "
        f"{len(parts['test'])} test images")
    return parts


def build_dataset(config, train_items, rank_groups):
    """Labelled batches, zipped with rank batches when there are rank groups."""
    data_cfg, train_cfg, transfer = config.data, config.train, config.finetune
    dataset = pipeline.mos_dataset([it.path for it in train_items],
                                   [it.score for it in train_items], data_cfg.crop_size,
                                   data_cfg.batch_size, seed=train_cfg.seed,
                                   cache=data_cfg.cache_decoded,
                                   deterministic=train_cfg.deterministic,
                                   random_scale=data_cfg.random_scale)
    if not rank_groups:
        return dataset
    return tf.data.Dataset.zip((dataset, pipeline.rank_dataset(
        rank_groups, data_cfg.crop_size, transfer.rank_references_per_batch,
        seed=train_cfg.seed, cache=data_cfg.cache_decoded,
        deterministic=train_cfg.deterministic)))
