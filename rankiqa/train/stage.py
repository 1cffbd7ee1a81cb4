"""The one skeleton both stages train through, as slim's ``train_image_classifier`` is one
script for every network: place, lock, a fresh seeded graph, the stage's data, its loss on
every replica plus weight decay, the start, the scoring branch and its evaluation, the run's
description, the loop.

A stage (`Stage`) says only what differs: its inputs, its loss, what it restores and what it
trains. `rankiqa.train.rank` and `rankiqa.train.finetune` each build one and call
`train_stage`.
"""

import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

from rankiqa import nets, rundir, weights
from rankiqa.compat import tf
from rankiqa.scoring import Scorer
from rankiqa.train import distribute, loop

RESTORE_REPORT_NAME = "restore_report.json"


@dataclass(frozen=True)
class Stage:
    """What one stage is.

    Attributes:
      name: ``rank`` | ``finetune`` (``rankiqa.json``'s stage) and `command`, the CLI's.
      batches: ((global batch size, its config key), ...): each checked to split evenly
        over the replicas before anything is written.
      views: the `rankiqa.data.views.Views` its evaluation scores with (recorded as the
        model's own).
      data: ``data(log) -> (dataset, images_per_step)``, called in the fresh graph.
      loss: ``loss(network_fn, batch) -> (data loss, {name: scalar})`` on one replica; the
        scalars go to the progress line and TensorBoard (``loss`` among them).
      evaluation: ``evaluation(scorer, log) -> eval_fn or None`` (`loop.run_loop`).
      trainable: (scopes, config key): the variables it trains; empty: all.
      head_lr_multiplier: the head's learning rate over the rest's.
      extra_init: ``extra_init(scorer, network_fn, train_dir, chief, log) -> init_fn or
        None``, run after the start at a fresh run (the probe).
      eval_at_start: evaluate right after a fresh start.
      run_info: more of ``rankiqa.json``.
    """

    name: str
    command: str
    batches: Tuple[Tuple[int, str], ...]
    views: object
    data: Callable
    loss: Callable
    evaluation: Callable
    trainable: Tuple[Tuple[str, ...], str] = ((), "train.trainable_scopes")
    head_lr_multiplier: float = 1.0
    extra_init: Optional[Callable] = None
    eval_at_start: bool = False
    run_info: dict = field(default_factory=dict)


def train_stage(config, stage, train_dir, device="auto", log=print):
    """Trains `stage` as `config` (`RankConfig` or `FinetuneConfig`) says; resumes from
    `train_dir` when it holds a checkpoint.

    Returns:
      dict from `loop.run_loop`, plus ``eval_path`` and ``restore_report``.
    """
    network_fn = nets.get_network_fn(config.net.name, weight_decay=config.net.weight_decay,
                                     batch_norm_decay=config.net.batch_norm_decay,
                                     pooled_blocks=config.net.pooled_blocks)
    placement = loop.place(config.train, device)
    for size, key in stage.batches:
        placement.check_divides(size, key)
    log(f"training on {placement.describe()}")
    # one process per run folder: a second command on it is refused
    with loop.lock(train_dir, stage.command, placement, log):
        loop.start_graph(train_dir, config.train)
        dataset, images_per_step = stage.data(log)

        def replica_step(batch):  # the stage's loss plus weight decay, on each replica
            data_loss, scalars = stage.loss(network_fn, batch)
            regularization = tf.losses.get_regularization_loss()
            total_loss = tf.add(data_loss, regularization, name="total_loss")
            train_op, learning_rate = build_train_op(
                config, placement, network_fn, stage, total_loss, (data_loss, regularization))
            return train_op, {**scalars, "total_loss": total_loss, "learning_rate": learning_rate}

        train_op, scalars, input_init = distribute.build_step(placement, dataset, replica_step)
        with placement.scoring_scope():
            scorer = Scorer.in_graph(network_fn, stage.views)
        chief = placement.is_chief
        with placement.scope():  # the start: scratch, a package, a run (head excluded)
            init_fn, report = loop.build_init_fn(
                config.init, network_fn, log,
                os.path.join(train_dir, RESTORE_REPORT_NAME) if chief else None)
        # in a multi-worker job every worker evaluates and probes (session runs all must make;
        # the same data and seed give every replica the same head); the chief writes
        eval_fn = stage.evaluation(scorer, log)
        extra = stage.extra_init and stage.extra_init(scorer, network_fn, train_dir, chief, log)
        if chief:
            rundir.write_run_info(train_dir, stage.name, config, config.net.name,
                                  config.data.crop_size, stage.views, **stage.run_info)
        result = loop.run_loop(
            train_dir, train_op, config.train.max_steps, config.train, scalars, placement,
            init_fn=loop.chain_init_fns(init_fn, extra), eval_fn=eval_fn,
            eval_at_start=stage.eval_at_start and extra is not None, log=log,
            images_per_step=images_per_step, input_init=input_init)
        result["eval_path"] = os.path.join(train_dir, rundir.EVAL_NAME) if eval_fn else None
        result["restore_report"] = report
        return result


def build_train_op(config, placement, network_fn, stage, total_loss, parts):
    """The train op of one replica over the stage's trainable variables (their batch-norm
    updates only), the head at its own learning rate."""
    scopes, option = stage.trainable
    variables_to_train, update_ops = loop.select_trainable(scopes, option)
    multipliers = {v: stage.head_lr_multiplier for v in tf.trainable_variables()
                   if weights.in_scopes(v.op.name, [network_fn.head_scope])
                   and (variables_to_train is None or v in variables_to_train)}
    return loop.build_train_op(
        total_loss, config.optim, tf.train.get_or_create_global_step(),
        variables_to_train=variables_to_train,
        gradient_multipliers=multipliers if stage.head_lr_multiplier != 1.0 else None,
        update_ops=update_ops, replicas=placement.replicas, parts=parts,
        loss_scaling=placement.loss_scaling)
