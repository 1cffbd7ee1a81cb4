"""Stage two, `rankiqa finetune`: transfer the ranking network to real quality scores.

Reads top to bottom: data (label file -> seeded split -> one tf.data stream per training
signal), loss (the same backbone, a fresh head; each signal's loss on its images' scores,
weighted: the MOS regression on scores normalised to [0, 1], higher better, and where named a
teacher's judgement and stage one's ranking hinge, `rankiqa.train.signals`), probe (optional:
the head fitted on frozen features). The start (`config.init`: the stage-one run minus the head,
a pretrained package, or scratch), weight decay and the loop are `rankiqa.train.stage`, shared
with stage one.
"""

import json
import os
from dataclasses import dataclass, replace
from typing import Tuple

import numpy as np

from rankiqa import metrics
from rankiqa.compat import slim, tf
from rankiqa.data import images as images_lib
from rankiqa.data import judgements as judgements_lib
from rankiqa.data import mos
from rankiqa.errors import InputError
from rankiqa.preprocessing import views as views_lib
from rankiqa.judge import thurstone
from rankiqa.run import checks, rundir
from rankiqa.train import probe, stage
from rankiqa.train import signals as signals_lib

PROBE_REPORT_NAME = "probe.json"
JUDGED_LABELS = "judged_labels.csv"  # a judgement file named as data.label_file, scaled
SCORE_SCALE = "normalised to [0, 1], higher is better"


def build_mos_evaluator(scorer, items, log):
    """``eval_fn(session, step)``: SROCC/PLCC/... on `items`, each the mean score of the
    scorer's views, inference mode; per group too where the items name two or more."""
    if not items:
        return None
    paths, targets = [it.path for it in items], np.array([it.score for it in items])
    groups = [it.group for it in items]

    def eval_fn(sess, step):
        # decoded again at each evaluation (overlapped with the network): memory stays bounded
        predicted = scorer.score_items(paths, session=sess)
        result = metrics.summary(predicted, targets)
        result.update(step=step, crops=scorer.views.count, views=scorer.views.as_dict())
        by_group = metrics.per_group(predicted, targets, groups)
        if by_group:  # within each kind of photo: what the overall figure hides
            result["per_group"] = by_group
        log(f"validation srocc {result['srocc']:.4f}"
            f"{metrics.describe_interval(result['srocc_ci'])} plcc {result['plcc']:.4f}"
            f"{metrics.describe_interval(result['plcc_ci'])} ({len(items)} images, 95 % "
            f"intervals) at step {step}{';' if by_group else ''}"
            f"{metrics.describe_groups(by_group)}")
        return result

    return eval_fn


@dataclass(frozen=True)
class FinetuneData:
    """What stage two's data step loads, handed to its loss, evaluation and probe (nothing is
    shared through closures).

    Attributes:
      dataset: zipped batches, ``{signal name: {"images", ...}}``.
      images_per_step: labelled photos a step, for the progress line's rate.
      parts: the seeded split (`load_parts`): ``{"train", "val", "test", "all"}``.
      signals: the loaded `rankiqa.train.signals`, in the order they are scored.
      probe_rank_weight: the ranking-aware probe's weight (`probe_rank_weight`).
    """

    dataset: object
    images_per_step: int
    parts: dict
    signals: Tuple[object, ...]
    probe_rank_weight: float


def train(config, train_dir, device="auto", log=print, skip_bad=False):
    """Fine-tunes as `config` (`rankiqa.config.FinetuneConfig`; ``init.source``: where a fresh
    run starts) says into `train_dir`, resuming from its checkpoint; `skip_bad` leaves out
    unreadable images. Returns `rankiqa.train.stage.train_stage`'s result."""
    checks.finetune_config(config)  # the files are read just below
    config = judgements_as_labels(config, train_dir, log)
    if config.adapt.below:  # few labels: a shipped model adapted to them, nothing trained
        labelled = mos.load_splits(config.data)["all"]
        if len(labelled) < config.adapt.below:
            return adapt_instead(config, labelled, train_dir, device, log)
    views = views_lib.from_config(config.data)  # checked before minutes of training
    wanted = signals_lib.from_config(config)

    # ---- data: a seeded split (by reference where the dataset has them), each signal's stream
    def data(log):
        parts = load_parts(config.data, skip_bad, log)
        loaded = tuple(signal.load(parts, skip_bad, log) for signal in wanted)
        streams = {s.name: s.dataset(config.train.seed, config.train.deterministic)
                   for s in loaded}
        # the progress line's rate counts labelled photos, as it always has
        return FinetuneData(tf.data.Dataset.zip(streams), config.data.batch_size, parts,
                            loaded, probe_rank_weight(config, len(parts["train"]), log))

    # ---- loss: every signal's images scored by one backbone and its fresh head in one
    # training pass (one batch-norm batch), those that ask for the moving statistics in a pass
    # of their own; the weighted sum of the signals' losses
    def loss(network_fn, batch, data):
        scores = score_signals(network_fn, batch, data.signals,
                               training=not config.finetune.frozen_batch_norm)
        total, scalars = None, {}
        for signal in data.signals:
            value, figures = signal.loss(scores[signal.name], batch[signal.name])
            total = signal.weight * value if total is None else total + signal.weight * value
            scalars.update(figures)
        return total, scalars

    # ---- the probe: the head fitted on the frozen features of the restored backbone, last
    def probe_init(scorer, network_fn, data, train_dir, chief, log):
        train_items, rank = data.parts["train"], signals_lib.find(data.signals, "rank")
        return probe.build_probe_init(
            scorer, [it.path for it in train_items], [it.score for it in train_items],
            slim.get_model_variables(scope=network_fn.head_scope), config.probe,
            views.replace(count=config.probe.crops), config.train.seed, log,
            os.path.join(train_dir, PROBE_REPORT_NAME) if chief else None,
            rank_groups=rank.groups if rank else None, rank_weight=data.probe_rank_weight,
            rank_margin=config.signals.rank_margin)

    return stage.train_stage(config, stage.Stage(
        name="finetune", command="finetune", batches=tuple(s.batch for s in wanted),
        views=views, data=data, loss=loss,
        evaluation=lambda scorer, data, log: build_mos_evaluator(scorer, data.parts["val"], log),
        trainable=(config.finetune.trainable_scopes, "finetune.trainable_scopes"),
        head_lr_multiplier=config.finetune.head_lr_multiplier,
        extra_init=probe_init if config.probe.enabled else None, eval_at_start=True,
        run_info={"init": config.init.source, "score": SCORE_SCALE,
                  "labels": mos.label_record(config.data.label_file, train_dir)},
        best_key="srocc", can_choose=lambda data, log: can_choose(config, data.parts["val"], log)),
        train_dir, device, log)


def judgements_as_labels(config, train_dir, log):
    """`config` as it stands, or where data.label_file is a judgement file (`rankiqa rate`'s):
    its answers scaled (Thurstone Case V, as `rankiqa scale`) into `JUDGED_LABELS` in the run
    folder, which the split, the MOS signal and validation then read, and the answers
    themselves trained on as people's comparisons (signals.judgements, on the training part)."""
    path = config.data.label_file
    if not checks.is_judgement_file(path):
        return config
    read = judgements_lib.read_pairs(path)
    scaled = thurstone.scale(read.judgements, bootstrap=0)
    labels = os.path.join(train_dir, JUDGED_LABELS)
    folder = os.path.dirname(os.path.abspath(labels))
    rows = "".join(f"{os.path.relpath(p, folder)},{s:.6f}\n"
                   for p, s in zip(scaled.photos, scaled.scores))
    os.makedirs(train_dir, exist_ok=True)
    rundir.write_atomic(labels, ("path,score\n" + rows).encode())
    low, high = int(np.floor(scaled.scores.min())), int(np.ceil(scaled.scores.max()))
    log(f"labels from people's comparisons: {len(read.judgements)} answers on "
        f"{len(scaled.photos)} photos scaled (JOD, in [{low}, {high}]) into {labels}")
    data = replace(config.data, dataset="csv", label_file=labels, image_root=None,
                   path_column="path", score_column="score", score_range=(low, high),
                   higher_is_better=True)
    return replace(config, data=data, signals=replace(
        config.signals, judgements=config.signals.judgements or path))


def can_choose(config, val, log):
    """Whether the validation part `val` is large enough (``train.keep_best_from``) to choose a
    checkpoint by; says why not where keep_best is on and it is not."""
    if len(val) >= config.train.keep_best_from:
        return True
    if config.train.keep_best and val:
        ci = metrics.interval(0.6, len(val), spearman=True)
        spread = (f"SROCC 0.6 on {len(val)} photos is anywhere in [{ci[0]:.2f}, {ci[1]:.2f}], "
                  "95 %" if ci else "no interval at all")
        log(f"validation part of {len(val)} photos, fewer than train.keep_best_from "
            f"({config.train.keep_best_from}): too few to choose a checkpoint by ({spread}); "
            "the run's model is its last step")
    return False


def adapt_instead(config, items, train_dir, device, log):
    """Below ``adapt.below`` labelled photos: the model ``adapt.model`` adapted to `items`
    (`rankiqa.train.adapt`, as `rankiqa calibrate`) and written into `train_dir`. No step is
    trained and no validation part held out: every label counts, the figures are
    cross-validated. A rerun with the same settings and labels finds it done."""
    from rankiqa.config import to_dict
    from rankiqa.run import rundir
    from rankiqa.train import adapt
    from rankiqa.weights import builtin

    # as rankiqa.json holds them (tuples as lists), so that a rerun's compare equal
    settings = json.loads(json.dumps(rundir.finite_or_null(to_dict(config))))
    model = config.adapt.model or builtin.DEFAULT
    if os.path.isdir(train_dir) and os.listdir(train_dir):
        info = rundir.find_run_info(train_dir)
        if (info.get("stage") == adapt.STAGE and info.get("requested") == settings and
                mos.changed_labels(info.get("labels", {}), config.data.label_file) is None):
            log(f"{train_dir} already holds {model} adapted to these labels with these "
                "settings; nothing to do")
            return {"eval": None, "adapt": info["adapt"], "step": 0}
        raise InputError(f"{train_dir} already holds a run ({info.get('stage', 'unknown')}, or "
                         "other settings or labels); adapting writes a new model: choose a new "
                         "--train-dir")
    log(f"{len(items)} labelled photos, fewer than adapt.below={config.adapt.below}: {model} "
        f"adapted to them instead of training (adapt.head {config.adapt.head}; "
        "docs/label-efficiency.md); no validation part: every label counts, the figures are "
        f"cross-validated; --init {config.init.source} is not used (--set adapt.below=0 trains "
        "from it, --set adapt.model=... adapts another model)")
    report = adapt.adapt(model, items, config.data, train_dir, config.data.label_file,
                         config.adapt.head, config.adapt.folds, seed=config.train.seed,
                         device=device, log=log, extra_info={"requested": settings})
    return {"eval": None, "adapt": report, "step": 0}


def score_signals(network_fn, batch, signals, training):
    """``{signal name: scores [n]}``: the signals' images scored in one pass in `training`
    mode, but those with ``own_pass`` in a pass of their own on the same variables in inference
    mode (it neither reads nor updates batch statistics). The own passes run first: they read
    the moving statistics before the training pass's updates move them (run side by side, which
    value they read would depend on the threads' timing)."""
    shared = [s for s in signals if not (training and s.own_pass)]
    apart = [s for s in signals if training and s.own_pass]
    reuse = tf.AUTO_REUSE if apart else None  # whichever pass is built first makes the variables
    out = {}
    for signal in apart:
        out[signal.name], _ = network_fn(network_fn.preprocess(batch[signal.name]["images"]),
                                         is_training=False, reuse=reuse)
    with tf.control_dependencies(list(out.values())):
        images = [batch[s.name]["images"] for s in shared]
        scores, _ = network_fn(network_fn.preprocess(tf.concat(images, axis=0)), training,
                               reuse=reuse)
    sizes = [tf.shape(x)[0] for x in images]
    out.update(zip((s.name for s in shared), tf.split(scores, sizes)))
    return out


def probe_rank_weight(config, labelled, log):
    """The ranking-aware probe's weight: ``probe.rank_weight``, or with ``probe.rank_rule:
    labels`` the weight the label-efficiency study measured for `labelled` training photos
    (`rankiqa.train.probe.weight_for_labels`), where rank groups and the probe are there."""
    if not (config.probe.rank_rule == "labels" and config.signals.rank_list
            and config.probe.enabled):
        return config.probe.rank_weight
    weight = probe.weight_for_labels(labelled)
    log(f"probe: ranking weight {weight:.3g} for {labelled} labelled training photos "
        "(probe.rank_rule: labels; docs/label-efficiency.md)")
    return weight


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
