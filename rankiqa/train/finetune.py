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

from rankiqa import losses, metrics
from rankiqa.run import checks
from rankiqa.compat import slim, tf
from rankiqa.data import lists, mos, pipeline, teacher as teacher_lib
from rankiqa.data import images as images_lib
from rankiqa.preprocessing import views as views_lib
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
    groups = images_lib.usable_groups(lists.read_rank_list(rank_list), rank_list, skip_bad, log)
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
    parts, rank_groups, teacher = {}, [], {}

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
        if transfer.teacher_table:
            teacher.update(load_teacher(transfer.teacher_table, parts, log))
        return build_dataset(config, parts["train"], rank_groups, teacher), data_cfg.batch_size

    # ---- loss: regression on normalised scores by a fresh one-score head, plus the teacher's
    # scores of its views and stage one's ranking hinge on the rank groups, all scored in one
    # pass (one batch-norm batch; each signal weighted by its config key; rank images apart
    # on the moving statistics where finetune.rank_batch_norm says "moving")
    def loss(network_fn, batch):
        images, targets = batch["images"], batch["targets"]
        training = not transfer.frozen_batch_norm
        apart = "rank_images" in batch and training and transfer.rank_batch_norm == "moving"
        inputs = [images] + [batch[k] for k in ("teacher_images", "rank_images")
                             if k in batch and not (apart and k == "rank_images")]
        scores, _ = network_fn(network_fn.preprocess(tf.concat(inputs, axis=0)), training)
        if apart:  # the same variables; inference mode neither reads nor updates batch statistics
            scores = tf.concat([scores, network_fn(network_fn.preprocess(
                batch["rank_images"]), is_training=False, reuse=True)[0]], axis=0)
        at = tf.shape(targets)[0]
        regression_loss = loss_fn(scores[:at], targets)
        total, scalars = transfer.mos_weight * regression_loss, {"loss": regression_loss}
        if "teacher_images" in batch:
            end = at + tf.shape(batch["teacher_targets"])[0]
            teacher_loss = loss_fn(scores[at:end], batch["teacher_targets"])
            total += transfer.teacher_weight * teacher_loss
            scalars["teacher_loss"] = teacher_loss
            at = end
        if "rank_images" in batch:
            rank_scores = tf.reshape(scores[at:], [-1, len(rank_groups[0].paths)])
            rank_loss = rank_loss_fn(rank_scores, transfer.rank_margin)
            total += transfer.rank_weight * rank_loss
            scalars.update(rank_loss=rank_loss,
                           rank_accuracy=losses.ranking_accuracy(rank_scores))
        return total, scalars

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
        if transfer.rank_list else ()) + (
        ((transfer.teacher_views_per_batch, "finetune.teacher_views_per_batch"),)
        if transfer.teacher_table else ())
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
    bad = images_lib.refuse_or_skip(
        images_lib.check_images([it.path for it in parts["all"]], data_cfg.label_file),
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


def load_teacher(table, parts, log):
    """The teacher's views (`rankiqa.data.teacher.read_table`), refused when one is of a validation
    or test photo: the student would learn the photos it is then judged on."""
    paths, specs, scores = teacher_lib.read_table(table)
    held_out = {os.path.realpath(it.path) for it in parts["val"] + parts["test"]}
    leaked = sorted({p for p in paths if os.path.realpath(p) in held_out})
    if leaked:
        raise InputError(f"{table}: {len(leaked)} of its photos are in the validation or test "
                         f"part (e.g. {leaked[0]}); teach on this config's training part")
    # a teacher's photo that cannot be read is refused now, not at the step that draws it
    # (the labelled ones load_parts has just checked)
    checked = {os.path.realpath(it.path) for it in parts["all"]}
    unchecked = sorted({p for p in paths if os.path.realpath(p) not in checked})
    images_lib.refuse_or_skip(images_lib.check_images(unchecked, table), False, "teacher", log)
    log(f"third signal: the teacher's scores of {len(paths)} views of "
        f"{len(set(paths))} photos ({table})")
    return {"paths": paths, "specs": specs, "scores": scores}


def build_dataset(config, train_items, rank_groups, teacher=None):
    """``{"images", "targets"}`` labelled batches, with ``teacher_images``/``teacher_targets``
    from the teacher's views and ``rank_images`` from the rank groups where there are any."""
    data_cfg, train_cfg, transfer = config.data, config.train, config.finetune
    streams = {"labelled": pipeline.mos_dataset(
        [it.path for it in train_items], [it.score for it in train_items], data_cfg.crop_size,
        data_cfg.batch_size, seed=train_cfg.seed, cache=data_cfg.cache_decoded,
        deterministic=train_cfg.deterministic, random_scale=data_cfg.random_scale)}
    if teacher:
        streams["teacher"] = pipeline.teacher_dataset(
            teacher["paths"], teacher["specs"], teacher["scores"], data_cfg.crop_size,
            transfer.teacher_views_per_batch, seed=train_cfg.seed,
            deterministic=train_cfg.deterministic)
    if rank_groups:
        streams["rank"] = pipeline.rank_dataset(
            rank_groups, data_cfg.crop_size, transfer.rank_references_per_batch,
            seed=train_cfg.seed, cache=data_cfg.cache_decoded,
            deterministic=train_cfg.deterministic)

    def named(batches):
        out = dict(zip(("images", "targets"), batches["labelled"]))
        if "teacher" in batches:
            out.update(zip(("teacher_images", "teacher_targets"), batches["teacher"]))
        if "rank" in batches:
            out["rank_images"] = batches["rank"]
        return out

    return tf.data.Dataset.zip(streams).map(named)
