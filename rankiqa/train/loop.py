"""The training machinery both stages share: a fresh seeded graph, the start (`build_init_fn`),
optimizer, learning-rate schedule, train op with batch-norm updates, and one session loop with
resume, checkpoints, summaries, progress, periodic evaluation and a NaN guard.

The two stages differ only in the graph they build and in what they restore at a fresh start.
"""

import contextlib
import math
import os
import tempfile
import time

from rankiqa import nets, rundir, weights
from rankiqa.compat import slim, tf
from rankiqa.errors import InputError, RankiqaError
from rankiqa.progress import duration, time_left
from rankiqa.train import distribute


class TrainingDiverged(RankiqaError, RuntimeError):
    """The loss became NaN or infinite; the message names the steps and the last checkpoint."""


def place(train_cfg, device):
    """Where this process trains (`rankiqa.train.distribute.get_placement`), checked before
    anything is written; a multi-worker job's server starts here."""
    placement = distribute.get_placement(train_cfg.strategy, train_cfg.devices, device,
                                         train_cfg.precision)
    if placement.cluster is not None and not train_cfg.deterministic:
        raise InputError("train.deterministic=false cannot be used by a multi-worker job: "
                         "every worker must draw the same global batches to split them")
    return placement


def lock(train_dir, command, placement, log):
    """The run folder's lock (`rundir.locked`), held by the chief: the other workers of a job
    share its folder without writing to it."""
    if not placement.is_chief:
        return contextlib.nullcontext()
    return rundir.locked(train_dir, command, log)


def start_graph(train_dir, train_cfg):
    """A fresh default graph, seeded, and the train dir made.

    With `train_cfg.deterministic` the input pipelines also keep their order and draw crops
    from per-element stateless seeds (`rankiqa.data.pipeline`), so that a rerun of the same
    command gives the same numbers on the same machine. TF's process-wide
    `enable_op_determinism` is not used: it makes every later graph in the process (a user's
    too) fail on unseeded initialisers.
    """
    os.makedirs(train_dir, exist_ok=True)
    tf.reset_default_graph()
    tf.set_random_seed(train_cfg.seed)


def build_init_fn(init_cfg, network_fn, log, report_path=None):
    """(``init_fn(session)``, `RestoreReport`) for `init_cfg` (`rankiqa.config.InitConfig`),
    over the model variables built so far; (None, None) for scratch. The source is checked now,
    before any step; when `init_fn` runs (a fresh start, not a resume) its report is logged and,
    once every value has loaded, written to `report_path`."""
    source = init_cfg.source
    exclude = (init_cfg.exclude_scopes if init_cfg.exclude_scopes is not None
               else (network_fn.head_scope,))
    load, report = weights.build_init(
        source, exclude_scopes=exclude, source_scope=init_cfg.source_scope,
        scope=network_fn.scope, official_scope=nets.official_scopes.get(network_fn.name),
        net_name=network_fn.name, allow_missing=init_cfg.ignore_missing)
    if load is None:
        return None, None

    def init_fn(session):
        for line in report.lines():
            log(line)
        load(session)
        if report_path:
            rundir.write_json_atomic(report_path, report.as_dict())

    return init_fn, report


def build_learning_rate(optim, global_step):
    """Learning-rate tensor from an `OptimConfig`."""
    step = tf.cast(global_step, tf.float32)
    if optim.lr_schedule == "constant":
        lr = tf.constant(optim.lr, tf.float32)
    elif optim.lr_schedule == "exponential":
        lr = optim.lr * tf.pow(optim.lr_decay_rate, step / float(optim.lr_decay_steps))
    elif optim.lr_schedule == "piecewise":
        values = [optim.lr * optim.lr_decay_rate ** k for k in range(len(optim.lr_boundaries) + 1)]
        lr = tf.train.piecewise_constant(global_step, [int(b) for b in optim.lr_boundaries], values)
    elif optim.lr_schedule == "cosine":
        progress = tf.minimum(step / float(optim.lr_decay_steps), 1.0)
        lr = optim.lr * 0.5 * (1.0 + tf.cos(math.pi * progress))
    else:
        raise InputError(f"unknown optim.lr_schedule {optim.lr_schedule!r}; choose from "
                         "['constant', 'cosine', 'exponential', 'piecewise']")
    if optim.warmup_steps > 0:
        lr = lr * tf.minimum(1.0, (step + 1.0) / float(optim.warmup_steps))
    return tf.identity(lr, name="learning_rate")


def build_optimizer(optim, learning_rate):
    optimizers = {
        "sgd": lambda: tf.train.GradientDescentOptimizer(learning_rate),
        "momentum": lambda: tf.train.MomentumOptimizer(learning_rate, optim.momentum),
        "adam": lambda: tf.train.AdamOptimizer(learning_rate),
        "rmsprop": lambda: tf.train.RMSPropOptimizer(learning_rate, momentum=optim.momentum),
    }
    if optim.optimizer not in optimizers:
        raise InputError(f"unknown optim.optimizer {optim.optimizer!r}; choose from "
                         f"{sorted(optimizers)}")
    return optimizers[optim.optimizer]()


def replica_objective(data_loss, regularization, replicas):
    """What one replica of `replicas` minimises so that the optimizer's *sum* of their
    gradients is one device's gradient for the global batch: its share (1/replicas) of the data
    loss, and weight decay once. Weight decay's terms were built with the variables, reading
    the first replica's copies, so the first replica adds them whole and the others none (each
    adding a share would give the others' copies no gradient: decay / replicas in all)."""
    first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
    return data_loss / replicas + tf.cast(first, data_loss.dtype) * regularization


def build_train_op(total_loss, optim, global_step, variables_to_train=None,
                   gradient_multipliers=None, update_ops=None, replicas=1, parts=None,
                   loss_scaling=False):
    """Train op that also runs the batch-norm moving-average updates (UPDATE_OPS).

    Args:
      total_loss: data loss plus weight decay.
      replicas: replicas of the step (`rankiqa.train.distribute`); with more than one, each
        minimises `replica_objective` of `parts`, (data loss, weight decay). With
        clip_gradient_norm, each replica clips its share before the sum.
      loss_scaling: dynamic loss scaling, for float16 on GPUs (whose small gradients would
        otherwise vanish); bfloat16 has float32's range and needs none.

    Returns:
      (train_op evaluating to the loss it minimised, learning-rate tensor).
    """
    learning_rate = build_learning_rate(optim, global_step)
    optimizer = build_optimizer(optim, learning_rate)
    if loss_scaling:
        optimizer = tf.mixed_precision.MixedPrecisionLossScaleOptimizer(optimizer, "dynamic")
    if replicas > 1:
        total_loss = replica_objective(*parts, replicas)
    train_op = slim.learning.create_train_op(
        total_loss, optimizer, global_step=global_step, update_ops=update_ops,
        variables_to_train=variables_to_train,
        clip_gradient_norm=optim.clip_gradient_norm, gradient_multipliers=gradient_multipliers,
        # our own guard below names the step and the last good checkpoint
        check_numerics=False)
    return train_op, learning_rate


def select_trainable(trainable_scopes, option):
    """(variables to train, batch-norm update ops) for `trainable_scopes`; (None, None) when
    empty, meaning everything. Frozen layers keep their batch-norm statistics too, so they stay
    bit-identical. `option` names the config key in the error."""
    if not trainable_scopes:
        return None, None
    variables = [v for v in tf.trainable_variables()
                 if weights.in_scopes(v.op.name, trainable_scopes)]
    if not variables:
        raise InputError(f"{option} {list(trainable_scopes)} match no trainable variable")
    update_ops = [op for op in tf.get_collection(tf.GraphKeys.UPDATE_OPS)
                  if weights.in_scopes(op.name, trainable_scopes)]
    return variables, update_ops


def chain_init_fns(*init_fns):
    """One ``init_fn(session)`` running the given ones (None skipped) in order: later ones
    overwrite what earlier ones set."""
    fns = [fn for fn in init_fns if fn is not None]
    if not fns:
        return None

    def init_fn(session):
        for fn in fns:
            fn(session)

    return init_fn


# eval.json keeps these of every evaluation in its history
HISTORY_KEYS = ("rank_accuracy", "srocc", "plcc", "krocc")


def run_loop(train_dir, train_op, max_steps, train_cfg, scalars, placement, init_fn=None,
             eval_fn=None, log=print, images_per_step=None, eval_at_start=False,
             input_init=None):
    """Runs `train_op` until the global step reaches `max_steps`. Call it holding the train
    dir's lock (`rundir.locked`) in the chief.

    In a multi-worker job every worker runs the same sequence of session runs (start, steps,
    summaries, saves, evaluations): a run that only some workers make waits forever for the
    others' collectives. All replicas thus begin from the same values (resume, else
    `init_fn`); only the chief writes files: checkpoints, summaries and `eval.json`.

    A run starts from, in this order: the train dir's own newest readable checkpoint (resume;
    an unreadable newest one is passed over with a warning), else `init_fn` (the configured
    start, `build_init_fn`), else the variables' initialisers. A folder that holds checkpoints
    never starts over. Checkpoints are indexed by relative names, so a run folder can be copied
    or moved; what an interrupted run left (temporary files, checkpoints beyond
    `keep_checkpoints`) is cleaned up on the next start.

    Args:
      train_dir: checkpoints, summaries and eval.json go here.
      train_op: evaluates to the loss (from `build_train_op`).
      max_steps: final global step.
      train_cfg: `TrainConfig` (log_every, summary_every, save_every, eval_every,
        keep_checkpoints).
      scalars: ``{name: scalar tensor}`` for TensorBoard and the progress line (with "loss").
      placement: `rankiqa.train.distribute.Placement` (session target and config, chief).
      init_fn: ``init_fn(session)`` run at a fresh start only, after variable initialisation.
      eval_fn: ``eval_fn(session, step) -> dict`` run every eval_every steps and at the end;
        its result goes to ``eval.json`` with the history of every evaluation of the run.
      log: callable taking one line of progress.
      images_per_step: for the img/s figure of the progress line.
      eval_at_start: evaluate right after a fresh start (the probe's frozen-backbone result).
      input_init: the input iterator's initializer, run once the session is up.

    Returns:
      dict: final step, last loss, last eval result, checkpoint path.

    Raises:
      TrainingDiverged: the loss became NaN or infinite.
    """
    global_step = tf.train.get_or_create_global_step()
    chief = placement.is_chief
    saver = tf.train.Saver(max_to_keep=train_cfg.keep_checkpoints)
    prefix = os.path.join(train_dir, rundir.CHECKPOINT_NAME)
    eval_path = os.path.join(train_dir, rundir.EVAL_NAME)
    names = sorted(scalars)
    fetches = {"train": train_op, "scalars": {n: scalars[n] for n in names}}
    result = {"eval": None}
    if chief:
        rundir.remove_temporaries(train_dir, log)

    with tf.Session(placement.target, config=placement.config) as sess:
        latest = weights.latest_checkpoint(train_dir, verify=True, log=log)
        history = []
        if latest:
            saver.restore(sess, latest)
            step = int(sess.run(global_step))
            log(f"resumed from {latest} at step {step}")
            # the checkpoints before the kill count towards keep_checkpoints again
            saver.recover_last_checkpoints([p for _, p in reversed(
                weights.checkpoints_on_disk(train_dir)) if int(p.rsplit("-", 1)[1]) <= step])
            if chief and os.path.isfile(eval_path):
                history = [h for h in rundir.read_json(eval_path).get("history", [])
                           if h["step"] <= step]
        else:
            sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
            if init_fn is not None:
                init_fn(sess)
            step = 0
        if input_init is not None:
            sess.run(input_init)
        writer = tf.summary.FileWriter(train_dir, sess.graph if not latest else None) if chief \
            else None

        def summarise(at, values, prefix=""):
            # written from the fetched values, so TensorBoard's tags are exactly the scalars'
            # names (tf.summary ops would be uniquified to loss_1, learning_rate_1 ...)
            if writer is not None:
                writer.add_summary(tf.Summary(value=[
                    tf.Summary.Value(tag=prefix + name, simple_value=float(value))
                    for name, value in sorted(values.items())]), at)
        last_ckpt, last_ckpt_step = latest, step
        last_log_step, last_log_time = step, time.time()
        first_step, first_time = last_log_step, last_log_time
        loss = float("nan")

        def save(at):
            nonlocal last_ckpt, last_ckpt_step
            if not chief:
                # saving mirrored variables runs collectives every worker must join: the
                # others save too, aside, and throw it away
                with tempfile.TemporaryDirectory(prefix="rankiqa-worker-") as aside:
                    saver.save(sess, os.path.join(aside, rundir.CHECKPOINT_NAME),
                               global_step=at, write_meta_graph=False,
                               write_state=False)
                last_ckpt, last_ckpt_step = f"{prefix}-{at}", at  # the chief's
                return
            last_ckpt = saver.save(sess, prefix, global_step=at, write_meta_graph=False)
            rundir.fault_point(f"before-index:{at}")
            weights.write_checkpoint_index(train_dir, saver.last_checkpoints)
            last_ckpt_step = at

        def evaluate(at):
            if eval_fn is None:
                return
            evaluation = eval_fn(sess, at)
            if not chief:
                return
            history[:] = [h for h in history if h["step"] != at]  # one entry per step
            history.append({"step": at, **{k: evaluation[k] for k in HISTORY_KEYS
                                            if k in evaluation}})
            evaluation["history"] = list(history)
            rundir.write_json_atomic(eval_path, evaluation)
            result["eval"] = evaluation
            # validation SROCC/PLCC/KROCC (stage two) or held-out rank accuracy (stage one)
            summarise(at, {k: evaluation[k] for k in HISTORY_KEYS if k in evaluation},
                      "validation/")

        if not latest and eval_at_start:
            evaluate(0)
        due = train_cfg.eval_every and step % train_cfg.eval_every == 0
        if latest and due and 0 < step < max_steps and all(h["step"] != step for h in history):
            evaluate(step)  # the run was stopped before this step's evaluation was written
        if step >= max_steps:
            log(f"global step {step} already reaches max_steps {max_steps}; nothing to train")
        while step < max_steps:
            want_summary = train_cfg.summary_every and (step + 1) % train_cfg.summary_every == 0
            out = sess.run(fetches)
            step += 1
            loss = float(out["train"])
            if not math.isfinite(loss):
                where = (f"last good checkpoint: {last_ckpt} (step {last_ckpt_step})" if last_ckpt
                         else "no checkpoint was written yet")
                raise TrainingDiverged(
                    f"loss became {loss} between step {last_log_step} (last logged, finite) and "
                    f"step {step}; {where}. Lower optim.lr or set optim.clip_gradient_norm.")
            if want_summary:
                summarise(step, out["scalars"])
            if train_cfg.log_every and (step % train_cfg.log_every == 0 or step == max_steps):
                now = time.time()
                speed = ""
                if images_per_step:
                    rate = images_per_step * (step - last_log_step) / (now - last_log_time)
                    speed = f"  {rate:.1f} img/s" if rate < 100 else f"  {rate:.0f} img/s"
                values = "  ".join(f"{n} {out['scalars'][n]:.4g}" for n in names)
                # time left at this run's mean pace so far (evaluations and saves included)
                left = time_left(step - first_step, max_steps - first_step, now - first_time)
                left = f"  {duration(left)} left" if left is not None and step < max_steps else ""
                log(f"step {step}/{max_steps}  {values}{speed}{left}")
                last_log_step, last_log_time = step, now
            if train_cfg.save_every and step % train_cfg.save_every == 0:
                save(step)
            if train_cfg.eval_every and step % train_cfg.eval_every == 0 and step != max_steps:
                evaluate(step)
        if last_ckpt_step != step or last_ckpt is None:
            save(step)
        if (result["eval"] or {}).get("step") != step:  # not twice (max_steps 0: the probe's)
            evaluate(step)
        if writer is not None:
            writer.close()
    return {"step": step, "loss": loss, "eval": result["eval"], "checkpoint": last_ckpt}
