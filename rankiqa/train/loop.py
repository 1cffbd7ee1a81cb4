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

from rankiqa.run import rundir
from rankiqa.weights import restore
from rankiqa.compat import slim, tf
from rankiqa.errors import InputError, RankiqaError
from rankiqa.run.progress import duration, time_left
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
    """The stage's graph (the default one, `rankiqa.train.stage.train_stage`'s) seeded, and
    the train dir made.

    With `train_cfg.deterministic` the input pipelines also keep their order and draw crops
    from per-element stateless seeds (`rankiqa.data.pipeline`), so that a rerun of the same
    command gives the same numbers on the same machine. TF's process-wide
    `enable_op_determinism` is not used: it makes every later graph in the process (a user's
    too) fail on unseeded initialisers.
    """
    os.makedirs(train_dir, exist_ok=True)
    tf.set_random_seed(train_cfg.seed)


def build_init_fn(init_cfg, network_fn, log, report_path=None):
    """(``init_fn(session)``, `RestoreReport`) for `init_cfg` (`rankiqa.config.InitConfig`),
    over the model variables built so far; (None, None) for scratch. The source is checked now,
    before any step; when `init_fn` runs (a fresh start, not a resume) its report is logged and,
    once every value has loaded, written to `report_path`."""
    source = init_cfg.source
    exclude = (init_cfg.exclude_scopes if init_cfg.exclude_scopes is not None
               else (network_fn.head_scope,))
    load, report = restore.build_init(
        source, exclude_scopes=exclude, source_scope=init_cfg.source_scope,
        scope=network_fn.scope, official_scope=network_fn.official_scope,
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
                 if restore.in_scopes(v.op.name, trainable_scopes)]
    if not variables:
        raise InputError(f"{option} {list(trainable_scopes)} match no trainable variable")
    update_ops = [op for op in tf.get_collection(tf.GraphKeys.UPDATE_OPS)
                  if restore.in_scopes(op.name, trainable_scopes)]
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
             input_init=None, best_key=None, keep_best=False):
    """Runs `train_op` until the global step reaches `max_steps`. Call it holding the train
    dir's lock (`rundir.locked`) in the chief.

    In a multi-worker job every worker makes the same session runs (one only some made would
    wait forever for the others' collectives), all from the same values; only the chief writes.
    A run starts from its own newest readable checkpoint (resume; `start`), else `init_fn`,
    else the initialisers; a folder that holds checkpoints never starts over, and what an
    interrupted run left is cleaned up on the next start.

    Args:
      train_dir: checkpoints, summaries and eval.json go here.
      train_op: evaluates to the loss (from `build_train_op`); max_steps: the final step.
      train_cfg: `TrainConfig` (log_every, summary_every, save_every, eval_every, ...).
      scalars: ``{name: scalar tensor}`` for TensorBoard and the progress line (with "loss").
      placement: `rankiqa.train.distribute.Placement` (session target and config, chief).
      init_fn: ``init_fn(session)`` run at a fresh start only, after variable initialisation.
      eval_fn: ``eval_fn(session, step) -> dict`` run every eval_every steps and at the end;
        its result goes to ``eval.json`` with the history of every evaluation of the run.
      log: callable taking one line of progress; images_per_step: for its img/s figure.
      eval_at_start: evaluate right after a fresh start (the probe's frozen-backbone result).
      input_init: the input iterator's initializer, run once the session is up.
      best_key: the evaluation's figure that says which is better (srocc, rank_accuracy).
      keep_best: keep the checkpoint of the best `best_key` in ``best/`` (`Best`): the run's
        model; without it, a final figure below an earlier one is warned of.

    Returns:
      dict: final step, last loss, last eval result, checkpoint path, and ``kept``: the best
      evaluation's step and figure when `keep_best`, else None.

    Raises:
      TrainingDiverged: the loss became NaN or infinite.
    """
    chief = placement.is_chief
    saver = tf.train.Saver(max_to_keep=train_cfg.keep_checkpoints)
    if chief:
        rundir.remove_temporaries(train_dir, log)
    with tf.Session(placement.target, config=placement.config) as sess:
        latest, step = start(sess, saver, train_dir, init_fn, log, chief)
        if input_init is not None:
            sess.run(input_init)
        summaries = Summaries(train_dir, sess.graph if not latest else None) if chief else None
        checkpoints = Checkpoints(sess, saver, train_dir, chief, latest, step)
        evaluations = Evaluations(eval_fn, train_dir, chief, summaries, step if latest else None)
        if keep_best and eval_fn:
            evaluations.best = Best(sess, tf.train.Saver(max_to_keep=1), train_dir, chief,
                                    best_key, evaluations.history, log)
        evaluate_before_training(sess, evaluations, latest, step, max_steps, eval_at_start,
                                 train_cfg.eval_every, log)
        step, loss = train_steps(sess, train_op, scalars, step, max_steps, train_cfg, log,
                                 images_per_step, checkpoints, evaluations, summaries)
        finish(sess, step, checkpoints, evaluations, summaries)
    kept = evaluations.best.best if evaluations.best else None
    if chief:
        say_which_model(evaluations, best_key, log)
    return {"step": step, "loss": loss, "eval": evaluations.last, "checkpoint": checkpoints.last,
            "kept": kept}


def say_which_model(evaluations, best_key, log):
    """Warns where the run's model is not what its figures suggest: no best could be kept (no
    evaluation gave a figure), or, without keep_best, the last is below an earlier one."""
    if evaluations.best and not evaluations.best.best:
        log(f"warning: no evaluation gave a {best_key} (undefined when every validation "
            "label is the same): no best was kept; the run's model is its last checkpoint")
    elif not evaluations.best and best_key:
        warn_if_worse(evaluations.history, best_key, log)


def finish(sess, step, checkpoints, evaluations, summaries):
    """The last step's checkpoint and evaluation, each made once; the summaries closed."""
    if checkpoints.last_step != step or checkpoints.last is None:
        checkpoints.save(step)
    if (evaluations.last or {}).get("step") != step:  # not twice (max_steps 0: the probe's)
        evaluations.run(sess, step)
    if summaries is not None:
        summaries.close()


def evaluate_before_training(sess, evaluations, latest, step, max_steps, at_start, every, log):
    """The evaluations due before the first step: a fresh start's with `at_start` (the probe's
    frozen-backbone figure), and a resumed run's whose step it was stopped before writing."""
    if not latest and at_start:
        evaluations.run(sess, 0)
    due = every and step % every == 0
    if latest and due and 0 < step < max_steps and not evaluations.has(step):
        evaluations.run(sess, step)
    if step >= max_steps:
        log(f"global step {step} already reaches max_steps {max_steps}; nothing to train")


def warn_if_worse(history, key, log):
    """Warns when the last evaluation's `key` is below an earlier one's (the run's model is
    the last: train.keep_best is off)."""
    scored = [h for h in history if isinstance(h.get(key), (int, float))
              and math.isfinite(h[key])]
    if len(scored) > 1:
        best = max(scored[:-1], key=lambda h: h[key])
        if best[key] > scored[-1][key]:
            log(f"warning: {key} {scored[-1][key]:.4f} at the last step {scored[-1]['step']} is "
                f"below {best[key]:.4f} at step {best['step']}; the run's model is the last "
                "(train.keep_best keeps the best)")


class Best:
    """The run's best validated checkpoint (``train.keep_best``), in ``RUN/best/``: saved at
    each evaluation better on `key` than every earlier one (a tie keeps the earlier), one
    kept, with its figure in ``best/best.json``; `rankiqa.weights.restore.resolve_checkpoint`
    makes it the run's model. Every worker saves (saving mirrored variables runs collectives),
    the others aside.

    At a resume the kept checkpoint is read back: an unreadable one (a kill or a full disk
    cut it) is named and dropped, and the best is chosen again from the evaluations to come.
    A readable one stays the best even when its step lies beyond the resumed one (a new best
    between two regular checkpoints): it is a validated model, and the one it replaced is
    gone."""

    RECORD = "best.json"

    def __init__(self, sess, saver, train_dir, chief, key, history, log):
        self.sess, self.saver, self.chief, self.key = sess, saver, chief, key
        self.folder = os.path.join(train_dir, rundir.BEST_NAME)
        self.best = None
        found = restore.checkpoints_on_disk(self.folder) if os.path.isdir(self.folder) else []
        kept = None
        for step, prefix in found:
            problem = kept is None and restore.checkpoint_problem(prefix)
            if kept is None and not problem:
                kept = (step, prefix)
                continue
            if problem:
                log(f"warning: the run's best checkpoint {prefix} cannot be read ({problem}); "
                    "dropped: the best is chosen again from the evaluations to come")
            if chief:
                self._remove(prefix)
        if kept:
            step, prefix = kept
            self.best = {"step": step, key: self._figure(step, history)}
            saver.recover_last_checkpoints([prefix])

    def _figure(self, step, history):
        """The kept checkpoint's figure: its record, else (a run from before the record) its
        step's in the history."""
        try:
            record = rundir.read_json(os.path.join(self.folder, self.RECORD))
        except (OSError, InputError):
            record = {}
        if record.get("step") == step:
            return record.get(self.key)
        return next((h.get(self.key) for h in history if h["step"] == step), None)

    def _remove(self, prefix):
        for name in os.listdir(self.folder):
            if name.startswith(os.path.basename(prefix) + "."):
                os.remove(os.path.join(self.folder, name))

    def offer(self, at, evaluation):
        value = evaluation.get(self.key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        known = self.best and self.best.get(self.key)
        if known is not None and value <= known:
            return
        if self.chief:
            os.makedirs(self.folder, exist_ok=True)
            self.saver.save(self.sess, os.path.join(self.folder, rundir.CHECKPOINT_NAME),
                            global_step=at, write_meta_graph=False)
            restore.write_checkpoint_index(self.folder, self.saver.last_checkpoints)
            rundir.write_json_atomic(os.path.join(self.folder, self.RECORD),
                                     {"step": at, self.key: value})
        else:
            with tempfile.TemporaryDirectory(prefix="rankiqa-worker-") as aside:
                self.saver.save(self.sess, os.path.join(aside, rundir.CHECKPOINT_NAME),
                                global_step=at, write_meta_graph=False, write_state=False)
        self.best = {"step": at, self.key: value}


def start(sess, saver, train_dir, init_fn, log, chief=True):
    """Resumes from `train_dir`'s newest readable checkpoint, else initialises and runs
    `init_fn`; returns (the checkpoint resumed from or None, the global step). Only the chief
    prunes."""
    latest = restore.latest_checkpoint(train_dir, verify=True, log=log)
    if not latest:
        sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
        if init_fn is not None:
            init_fn(sess)
        return None, 0
    saver.restore(sess, latest)
    step = int(sess.run(tf.train.get_or_create_global_step()))
    log(f"resumed from {latest} at step {step}")
    # the checkpoints before the kill count towards keep_checkpoints again; beyond it (a rerun
    # that lowered it) the oldest go now, as the saver drops only one per save
    before = [p for s, p in restore.checkpoints_on_disk(train_dir) if s <= step]  # newest first
    keep = saver.saver_def.max_to_keep
    if keep and len(before) > keep and chief:
        for prefix in before[keep:]:
            tf.train.remove_checkpoint(prefix)
            log(f"removed {prefix} (train.keep_checkpoints {keep})")
        before = before[:keep]
        restore.write_checkpoint_index(train_dir, list(reversed(before)))
    saver.recover_last_checkpoints(list(reversed(before)))
    return latest, step


def train_steps(sess, train_op, scalars, step, max_steps, train_cfg, log, images_per_step,
                checkpoints, evaluations, summaries):
    """The steps from `step` to `max_steps`, with summaries, progress lines, saves and
    evaluations at their cadence; returns (final step, last loss)."""
    names = sorted(scalars)
    fetches = {"train": train_op, "scalars": {n: scalars[n] for n in names}}
    pace = Pace(step, max_steps, images_per_step)
    loss = float("nan")
    while step < max_steps:
        want_summary = train_cfg.summary_every and (step + 1) % train_cfg.summary_every == 0
        out = sess.run(fetches)
        step += 1
        loss = float(out["train"])
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss} between step {pace.last_step} (last logged, finite) and "
                f"step {step}; {checkpoints.describe_last()}. Lower optim.lr or set "
                "optim.clip_gradient_norm.")
        if want_summary and summaries is not None:
            summaries.write(step, out["scalars"])
        if train_cfg.log_every and (step % train_cfg.log_every == 0 or step == max_steps):
            values = "  ".join(f"{n} {out['scalars'][n]:.4g}" for n in names)
            log(f"step {step}/{max_steps}  {values}{pace.tell(step)}")
        if train_cfg.save_every and step % train_cfg.save_every == 0:
            checkpoints.save(step)
        if train_cfg.eval_every and step % train_cfg.eval_every == 0 and step != max_steps:
            evaluations.run(sess, step)
    return step, loss


class Pace:
    """The img/s and time-left part of a progress line, at this run's mean pace so far
    (evaluations and saves included)."""

    def __init__(self, step, max_steps, images_per_step):
        self.first_step, self.first_time = step, time.time()
        self.last_step, self.last_time = step, self.first_time
        self.max_steps, self.images_per_step = max_steps, images_per_step

    def tell(self, step):
        now, speed = time.time(), ""
        if self.images_per_step:
            rate = self.images_per_step * (step - self.last_step) / (now - self.last_time)
            speed = f"  {rate:.1f} img/s" if rate < 100 else f"  {rate:.0f} img/s"
        left = time_left(step - self.first_step, self.max_steps - self.first_step,
                         now - self.first_time)
        left = f"  {duration(left)} left" if left is not None and step < self.max_steps else ""
        self.last_step, self.last_time = step, now
        return speed + left


class Summaries:
    """TensorBoard scalars, written from fetched values, so that the tags are exactly the
    scalars' names (tf.summary ops would be uniquified to loss_1, learning_rate_1 ...)."""

    def __init__(self, train_dir, graph=None):
        self.writer = tf.summary.FileWriter(train_dir, graph)

    def write(self, at, values, prefix=""):
        self.writer.add_summary(tf.Summary(value=[
            tf.Summary.Value(tag=prefix + name, simple_value=float(value))
            for name, value in sorted(values.items())]), at)

    def close(self):
        self.writer.close()


class Checkpoints:
    """Saves ``model.ckpt-STEP`` and keeps the index relative. Saving mirrored variables runs
    collectives every worker must join: the other workers save too, aside, and throw it
    away. Remembers the last save (the chief's) for a diverged run's message."""

    def __init__(self, sess, saver, train_dir, chief, latest, step):
        self.sess, self.saver, self.train_dir, self.chief = sess, saver, train_dir, chief
        self.prefix = os.path.join(train_dir, rundir.CHECKPOINT_NAME)
        self.last, self.last_step = latest, step

    def save(self, at):
        if not self.chief:
            with tempfile.TemporaryDirectory(prefix="rankiqa-worker-") as aside:
                self.saver.save(self.sess, os.path.join(aside, rundir.CHECKPOINT_NAME),
                                global_step=at, write_meta_graph=False, write_state=False)
            self.last, self.last_step = f"{self.prefix}-{at}", at
            return
        self.last = self.saver.save(self.sess, self.prefix, global_step=at,
                                    write_meta_graph=False)
        rundir.fault_point(f"before-index:{at}")
        restore.write_checkpoint_index(self.train_dir, self.saver.last_checkpoints)
        self.last_step = at

    def describe_last(self):
        if self.last:
            return f"last good checkpoint: {self.last} (step {self.last_step})"
        return "no checkpoint was written yet"


class Evaluations:
    """Runs ``eval_fn`` (every worker: a session run all must make); the chief keeps its
    history in ``eval.json`` (one entry per step; a resumed run keeps the entries up to its
    step) and writes its figures to TensorBoard under ``validation/``. Every worker reads the
    history at a resume, before any evaluation of this start can be written, so that all
    agree whether the resumed step still needs one (a worker evaluating alone waits forever)."""

    def __init__(self, eval_fn, train_dir, chief, summaries, resumed_at=None):
        self.eval_fn, self.chief, self.summaries = eval_fn, chief, summaries
        self.path = os.path.join(train_dir, rundir.EVAL_NAME)
        self.history, self.last, self.best = [], None, None  # best: a `Best`, set by run_loop
        if resumed_at is not None and os.path.isfile(self.path):
            history = rundir.read_json(self.path).get("history", [])
            if not (isinstance(history, list) and all(
                    isinstance(h, dict) and isinstance(h.get("step"), int) for h in history)):
                raise InputError(f"{self.path} is damaged (its history is not a list of "
                                 "evaluations with a step each): restore it from a copy, or "
                                 "move it away (the run resumes without its history)")
            self.history = [h for h in history if h["step"] <= resumed_at]

    def has(self, step):
        return any(h["step"] == step for h in self.history)

    def run(self, sess, at):
        if self.eval_fn is None:
            return
        evaluation = self.eval_fn(sess, at)
        if self.best is not None:
            self.best.offer(at, evaluation)
            evaluation["kept"] = dict(self.best.best) if self.best.best else None
        if not self.chief:
            return
        figures = {k: evaluation[k] for k in HISTORY_KEYS if k in evaluation}
        # SROCC within each kind of photo, where the validation part names kinds
        by_group = {f"srocc_{g}": f["srocc"] for g, f in evaluation.get("per_group", {}).items()}
        self.history = [h for h in self.history if h["step"] != at] + [
            {"step": at, **figures, **by_group}]
        evaluation["history"] = list(self.history)
        rundir.write_json_atomic(self.path, rundir.finite_or_null(evaluation))
        self.last = evaluation
        if self.summaries is not None:
            # validation SROCC/PLCC/KROCC (stage two) or held-out rank accuracy (stage one)
            self.summaries.write(at, {**figures, **by_group}, "validation/")
