"""Stage two, `rankiqa finetune`: transfer the ranking network to real quality scores.

Reads top to bottom: data (label file -> seeded split -> tf.data; optionally rank groups
beside it), network (the same backbone, a fresh head), start (`config.init`: the stage-one run
minus the head, a pretrained package, or scratch), probe (optional: the head fitted on frozen
features), loss (L2/L1 on scores normalised to [0, 1], higher better, plus optionally stage
one's ranking hinge on the rank groups), loop (shared with stage one).
"""

import os

import numpy as np

from rankiqa import losses, metrics, nets, rundir, weights
from rankiqa.compat import slim, tf
from rankiqa.data import lists, mos, pipeline
from rankiqa.data import views as views_lib
from rankiqa.errors import InputError
from rankiqa.scoring import Scorer
from rankiqa.train import distribute, loop, probe

RESTORE_REPORT_NAME = "restore_report.json"
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
        log(f"validation srocc {result['srocc']:.4f} plcc {result['plcc']:.4f} "
            f"({len(items)} images) at step {step}")
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
    """Fine-tunes as configured; resumes from `train_dir` when it holds a checkpoint.

    Args:
      config: `rankiqa.config.FinetuneConfig`; ``config.init.source`` says where a fresh run
        starts (``scratch`` for the no-pretraining baseline).
      train_dir: output directory.
      skip_bad: leave out unreadable images instead of refusing them.

    Returns:
      dict from `loop.run_loop` plus ``eval_path`` and ``restore_report``.
    """
    data_cfg, train_cfg, transfer = config.data, config.train, config.finetune
    if not config.init.source:
        raise InputError("finetune needs a start: --init STAGE_ONE_DIR (the stage-one output "
                         "directory), a pretrained name such as hed-vgg16, or scratch")
    if not data_cfg.label_file:
        raise InputError("finetune needs data.label_file (the dataset's label file)")
    views = views_lib.from_config(data_cfg)  # checked before minutes of training
    network_fn = nets.get_network_fn(config.net.name, weight_decay=config.net.weight_decay,
                                     batch_norm_decay=config.net.batch_norm_decay,
                                     pooled_blocks=config.net.pooled_blocks)
    loss_fn = losses.get_regression_loss_fn(train_cfg.loss)
    placement = loop.place(train_cfg, device)
    placement.check_divides(data_cfg.batch_size, "data.batch_size")
    if transfer.probe_rank_weight and not (transfer.probe and transfer.rank_list):
        raise InputError("finetune.probe_rank_weight needs finetune.probe and a "
                         "finetune.rank_list whose groups the probe orders")
    if transfer.rank_list:
        rank_loss_fn = losses.get_rank_loss_fn(transfer.rank_loss)
        placement.check_divides(transfer.rank_references_per_batch,
                                "finetune.rank_references_per_batch")
    log(f"training on {placement.describe()}")
    # one process per run folder: a second command on it is refused
    with loop.lock(train_dir, "finetune", placement, log):
        loop.start_graph(train_dir, train_cfg)

        # ---- data: a seeded split, by reference where the dataset has references
        parts = mos.load_splits(data_cfg)
        # every image decoded once now, so a bad one is named before the first step
        bad = views_lib.refuse_or_skip(
            views_lib.check_images([it.path for it in parts["all"]], data_cfg.label_file),
            skip_bad, "labelled", log)
        parts = {k: [it for it in v if it.path not in bad] for k, v in parts.items()}
        train_items = parts["train"]
        if len(train_items) < data_cfg.batch_size:
            raise InputError(f"{len(train_items)} training images cannot fill data.batch_size="
                             f"{data_cfg.batch_size}")
        log(f"{data_cfg.dataset}: {len(train_items)} training, {len(parts['val'])} validation, "
            f"{len(parts['test'])} test images")
        dataset = pipeline.mos_dataset([it.path for it in train_items],
                                       [it.score for it in train_items], data_cfg.crop_size,
                                       data_cfg.batch_size, seed=train_cfg.seed,
                                       cache=data_cfg.cache_decoded,
                                       deterministic=train_cfg.deterministic,
                                       random_scale=data_cfg.random_scale)
        levels, rank_groups = 0, []
        if transfer.rank_list:
            rank_groups = load_rank_groups(transfer.rank_list, data_cfg.crop_size, skip_bad, log)
            levels = len(rank_groups[0].paths)
            dataset = tf.data.Dataset.zip((dataset, pipeline.rank_dataset(
                rank_groups, data_cfg.crop_size, transfer.rank_references_per_batch,
                seed=train_cfg.seed, cache=data_cfg.cache_decoded,
                deterministic=train_cfg.deterministic)))

        # ---- network, loss and step, on each replica: the stage-one backbone and a fresh
        # one-score head, regression on normalised scores (plus the ranking hinge on the rank
        # groups, scored in the same pass) plus weight decay
        def replica_step(batch):
            (images, targets), rank_images = batch if levels else (batch, None)
            if levels:
                images = tf.concat([images, rank_images], axis=0)
            scores, _ = network_fn(network_fn.preprocess(images),
                                   is_training=not transfer.frozen_batch_norm)
            regression_loss = loss_fn(scores[:tf.shape(targets)[0]], targets)
            data_loss, extra = regression_loss, {}
            if levels:
                rank_scores = tf.reshape(scores[tf.shape(targets)[0]:], [-1, levels])
                rank_loss = rank_loss_fn(rank_scores, transfer.rank_margin)
                data_loss = regression_loss + transfer.rank_weight * rank_loss
                extra = {"rank_loss": rank_loss,
                         "rank_accuracy": losses.ranking_accuracy(rank_scores)}
            regularization = tf.losses.get_regularization_loss()
            total_loss = tf.add(data_loss, regularization, name="total_loss")
            variables_to_train, update_ops = loop.select_trainable(transfer.trainable_scopes,
                                                                   "finetune.trainable_scopes")
            multipliers = {v: transfer.head_lr_multiplier for v in tf.trainable_variables()
                           if weights.in_scopes(v.op.name, [network_fn.head_scope])
                           and (variables_to_train is None or v in variables_to_train)}
            train_op, learning_rate = loop.build_train_op(
                total_loss, config.optim, tf.train.get_or_create_global_step(),
                variables_to_train=variables_to_train,
                gradient_multipliers=multipliers or None, update_ops=update_ops,
                replicas=placement.replicas, parts=(data_loss, regularization),
                loss_scaling=placement.loss_scaling)
            return train_op, {"loss": regression_loss, "total_loss": total_loss,
                              "learning_rate": learning_rate, **extra}

        train_op, scalars, input_init = distribute.build_step(placement, dataset, replica_step)

        with placement.scoring_scope():
            scorer = Scorer.in_graph(network_fn, views)
        with placement.scope():
            # ---- start: everything but the excluded scopes (default: the head)
            init_fn, report = loop.build_init_fn(
                config.init, network_fn, log,
                os.path.join(train_dir, RESTORE_REPORT_NAME) if placement.is_chief else None)

        # ---- evaluation and the probe, both through the scoring branch; in a multi-worker job
        # every worker runs both (session runs all must make; the same data and seed give every
        # replica the same head), and the chief writes the results
        eval_fn = build_mos_evaluator(scorer, parts["val"], log)
        probe_init = None
        if transfer.probe:
            probe_init = probe.build_probe_init(
                scorer, [it.path for it in train_items], [it.score for it in train_items],
                slim.get_model_variables(scope=network_fn.head_scope), transfer,
                views.replace(count=transfer.probe_crops),
                train_cfg.seed, log,
                os.path.join(train_dir, PROBE_REPORT_NAME) if placement.is_chief else None,
                rank_groups=rank_groups if transfer.probe_rank_weight else None)
        if placement.is_chief:
            rundir.write_run_info(train_dir, "finetune", config, config.net.name,
                                  data_cfg.crop_size, views, init=config.init.source,
                                  score=SCORE_SCALE)

        # ---- loop
        result = loop.run_loop(
            train_dir, train_op, train_cfg.max_steps, train_cfg, scalars, placement,
            # the probe fits the head last, on the features of the restored backbone; the
            # evaluation after it is the frozen-backbone result (step 0 of the history)
            init_fn=loop.chain_init_fns(init_fn, probe_init), eval_fn=eval_fn,
            eval_at_start=probe_init is not None, log=log, images_per_step=data_cfg.batch_size,
            input_init=input_init)
        result["eval_path"] = os.path.join(train_dir, rundir.EVAL_NAME) if eval_fn else None
        result["restore_report"] = report
        return result
