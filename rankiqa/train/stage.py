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

from rankiqa import config as config_lib
from rankiqa import nets
from rankiqa.run import rundir
from rankiqa.weights import restore
from rankiqa.compat import tf
from rankiqa.config import to_dict
from rankiqa.data import mos
from rankiqa.errors import InputError
from rankiqa.serve.scoring import Scorer
from rankiqa.train import distribute, loop

RESTORE_REPORT_NAME = "restore_report.json"


@dataclass(frozen=True)
class Stage:
    """What one stage is.

    Attributes:
      name: ``rank`` | ``finetune`` (``rankiqa.json``'s stage) and `command`, the CLI's.
      batches: ((global batch size, its config key), ...): each checked to split evenly
        over the replicas before anything is written.
      views: the `rankiqa.preprocessing.views.Views` its evaluation scores with (recorded as the
        model's own).
      data: ``data(log) -> loaded``, called in the fresh graph: an object with ``dataset``
        and ``images_per_step`` (the progress line's rate), and whatever else the stage's
        other steps need, which each receives as its ``data`` argument (no step shares state
        with another through closures).
      loss: ``loss(network_fn, batch, data) -> (data loss, {name: scalar})`` on one replica;
        the scalars go to the progress line and TensorBoard (``loss`` among them).
      evaluation: ``evaluation(scorer, data, log) -> eval_fn or None`` (`loop.run_loop`).
      trainable: (scopes, config key): the variables it trains; empty: all.
      head_lr_multiplier: the head's learning rate over the rest's.
      extra_init: ``extra_init(scorer, network_fn, data, train_dir, chief, log) -> init_fn
        or None``, run after the start at a fresh run (the probe).
      eval_at_start: evaluate right after a fresh start.
      run_info: more of ``rankiqa.json``.
      best_key: the evaluation's figure that says which is better; with the config's
        ``train.keep_best`` the run's model is the checkpoint of its best (`loop.Best`).
      can_choose: ``can_choose(data, log) -> bool``: whether its evaluation can tell
        checkpoints apart (None: it can); where not, keep_best keeps none.
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
    best_key: Optional[str] = None
    can_choose: Optional[Callable] = None


def train_stage(config, stage, train_dir, device="auto", log=print):
    """Trains `stage` as `config` (`RankConfig` or `FinetuneConfig`) says; resumes from
    `train_dir` when it holds a checkpoint.

    Returns:
      dict from `loop.run_loop`, plus ``eval_path``, ``restore_report`` and ``graph`` (the
      stage's own `tf.Graph`).
    """
    # the stage's own graph, from the placement (a distribution strategy is made in graph mode
    # inside it) to the last session run: the process's eager mode is left as it was
    with tf.Graph().as_default() as graph:
        return {**_train_in_graph(config, stage, train_dir, device, log), "graph": graph}


def _train_in_graph(config, stage, train_dir, device, log):
    network_fn = nets.get_network_fn(config.net.name, weight_decay=config.net.weight_decay,
                                     batch_norm_decay=config.net.batch_norm_decay,
                                     pooled_blocks=config.net.pooled_blocks)
    placement = loop.place(config.train, device)
    for size, key in stage.batches:
        placement.check_divides(size, key)
    check_start(train_dir, config.init.source)
    log(f"training on {placement.describe()}")
    # one process per run folder: a second command on it is refused
    with loop.lock(train_dir, stage.command, placement, log):
        check_rerun(train_dir, stage, config, log)
        loop.start_graph(train_dir, config.train)
        data = stage.data(log)

        def replica_step(batch):  # the stage's loss plus weight decay, on each replica
            data_loss, scalars = stage.loss(network_fn, batch, data)
            regularization = tf.losses.get_regularization_loss()
            total_loss = tf.add(data_loss, regularization, name="total_loss")
            train_op, learning_rate = build_train_op(
                config, placement, network_fn, stage, total_loss, (data_loss, regularization))
            return train_op, {**scalars, "total_loss": total_loss, "learning_rate": learning_rate}

        train_op, scalars, input_init = distribute.build_step(placement, data.dataset,
                                                              replica_step)
        with placement.scoring_scope():
            scorer = Scorer.in_graph(network_fn, stage.views)
        chief = placement.is_chief
        with placement.scope():  # the start: scratch, a package, a run (head excluded)
            init_fn, report = loop.build_init_fn(
                config.init, network_fn, log,
                os.path.join(train_dir, RESTORE_REPORT_NAME) if chief else None)
        # in a multi-worker job every worker evaluates and probes (session runs all must make;
        # the same data and seed give every replica the same head); the chief writes
        eval_fn = stage.evaluation(scorer, data, log)
        extra = stage.extra_init and stage.extra_init(scorer, network_fn, data, train_dir,
                                                      chief, log)
        if chief:
            rundir.write_run_info(train_dir, stage.name, config, config.net.name,
                                  config.data.crop_size, stage.views, **stage.run_info)
        result = loop.run_loop(
            train_dir, train_op, config.train.max_steps, config.train, scalars, placement,
            init_fn=loop.chain_init_fns(init_fn, extra), eval_fn=eval_fn,
            eval_at_start=stage.eval_at_start and extra is not None, log=log,
            images_per_step=data.images_per_step, input_init=input_init,
            best_key=stage.best_key,
            keep_best=getattr(config.train, "keep_best", False) and (
                stage.can_choose is None or stage.can_choose(data, log)))
        if chief and result["kept"]:
            record_kept(train_dir, result, stage.best_key, log)
        result["eval_path"] = os.path.join(train_dir, rundir.EVAL_NAME) if eval_fn else None
        result["restore_report"] = report
        return result


# what a rerun may change and still resume the run's weights: how long, how often and where it
# trains, never what it learns or how its figures are made
RESUMABLE = ("train.max_steps", "train.log_every", "train.summary_every", "train.save_every",
             "train.eval_every", "train.keep_checkpoints", "train.strategy", "train.devices",
             "train.precision", "data.cache_decoded")


def record_kept(train_dir, result, key, log):
    """Says which checkpoint is the run's model (`loop.Best`): in ``rankiqa.json``'s ``kept``
    and one line."""
    kept, last = result["kept"], result["eval"] or {}
    info = rundir.read_run_info(train_dir)
    info["kept"] = {"step": kept["step"], key: kept[key], "last_step": result["step"],
                    f"last_{key}": last.get(key)}
    rundir.write_json_atomic(os.path.join(train_dir, rundir.RUN_INFO_NAME), info)
    if kept["step"] != result["step"] and last.get(key) is not None:
        # a tie keeps the earlier checkpoint
        than = "equal to" if kept[key] == last[key] else "above"
        log(f"the run's model is step {kept['step']}'s checkpoint ({rundir.BEST_NAME}/): "
            f"validation {key} {kept[key]:.4f}, {than} the last step's {last[key]:.4f} "
            "(train.keep_best)")


def check_start(train_dir, source):
    """Refuses a start (`init.source`) inside the run folder: the run would take its
    checkpoints for its own, resume from them and prune them."""
    start = rundir.input_path(source) if source else None
    if start and os.path.exists(start) and rundir.inside(start, train_dir):
        raise InputError(f"--init {source} lies in --train-dir {train_dir}: the run would resume "
                         "from it as its own and delete it as it saves; train into a new folder")


def check_rerun(train_dir, stage, config, log):
    """A rerun resumes a run only as it was configured: a run of the other stage, or a config
    that changes what it learns (any key but `RESUMABLE`), is refused with the keys named;
    resumable changes go on with a notice each."""
    recorded = rundir.find_run_info(train_dir) if os.path.isdir(train_dir) else {}
    best = os.path.join(train_dir, rundir.BEST_NAME)
    if not (restore.checkpoints_on_disk(train_dir) if os.path.isdir(train_dir) else []) and not (
            os.path.isdir(best) and restore.checkpoints_on_disk(best)):
        return  # a fresh start
    if not recorded:
        raise InputError(f"{train_dir} holds checkpoints but no {rundir.RUN_INFO_NAME}: nothing "
                         "says which stage and config trained them, and resuming would continue "
                         f"them under this one. Put back its {rundir.RUN_INFO_NAME}, or train "
                         f"into a new --train-dir (--init {train_dir} starts from its weights)")
    if recorded.get("stage") != stage.name:
        raise InputError(f"{train_dir} holds a {recorded.get('stage')} run; {stage.command} "
                         "would resume from its checkpoints as its own. Train into a new "
                         f"--train-dir (--init {train_dir} starts from it)")
    check_labels(train_dir, recorded, config)
    old, new = _flat(_rebuilt(type(config), recorded.get("config", {}))), _flat(to_dict(config))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    refused = [k for k in changed if k not in RESUMABLE]
    if refused:
        shown = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in refused[:5])
        raise InputError(f"{train_dir} was trained with another config ({shown}); resuming "
                         "would continue its weights under settings they were not trained "
                         "with. Rerun with its settings, or train into a new --train-dir")
    for key in changed:
        log(f"notice: {key} was {old.get(key)!r} at the run's last start, now "
            f"{new.get(key)!r}; resuming")


def check_labels(train_dir, recorded, config):
    """A run is bound to the labels it started with (``rankiqa.json``'s ``labels``): with other
    labels a resume would split validation anew (photos it trained on would validate it) and
    keep the best of figures on two label sets."""
    record = recorded.get("labels")
    label_file = getattr(config.data, "label_file", None)
    problem = record and label_file and mos.changed_labels(record, label_file)
    if problem:
        raise InputError(f"{problem}: a run is bound to its labels. Fine-tune on them in a new "
                         f"--train-dir (the same command with another folder), or put back the "
                         f"file {train_dir} trained on")


def _rebuilt(cls, recorded):
    """A recorded config as plain data with today's defaults and names (a run recorded before
    a key was added or renamed compares equal); as recorded when it no longer builds."""
    try:
        return to_dict(config_lib.from_dict(cls, recorded, "rankiqa.json", notify=lambda _: None,
                                               recorded=True))
    except InputError:
        return recorded


def _flat(tree, prefix=""):
    """``{"section.key": value}``, lists and tuples alike."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def build_train_op(config, placement, network_fn, stage, total_loss, parts):
    """The train op of one replica over the stage's trainable variables (their batch-norm
    updates only), the head at its own learning rate."""
    scopes, option = stage.trainable
    variables_to_train, update_ops = loop.select_trainable(scopes, option)
    multipliers = {v: stage.head_lr_multiplier for v in tf.trainable_variables()
                   if restore.in_scopes(v.op.name, [network_fn.head_scope])
                   and (variables_to_train is None or v in variables_to_train)}
    return loop.build_train_op(
        total_loss, config.optim, tf.train.get_or_create_global_step(),
        variables_to_train=variables_to_train,
        gradient_multipliers=multipliers if stage.head_lr_multiplier != 1.0 else None,
        update_ops=update_ops, replicas=placement.replicas, parts=parts,
        loss_scaling=placement.loss_scaling)
