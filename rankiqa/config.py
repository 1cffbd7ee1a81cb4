"""Configuration: YAML files become frozen dataclasses, one per command, at the CLI edge.

``load(RankConfig, path, overrides)`` reads the YAML, applies ``--set section.key=value``
overrides (values parsed with ``yaml.safe_load``, so ``1e-4`` is a float and ``[1, 2]`` a list),
and builds the dataclasses. An unknown key or a value of the wrong type raises `ConfigError`
naming the key and the file. Library code takes these typed objects, never raw dicts.

A renamed key keeps working for one release: `RENAMED` moves its value to the new key and
`load` reports a one-line notice (through `notify`). A config file that is not a path may name a
shipped one (``rank_tiny`` or ``rank_tiny.yaml``: `rankiqa/configs/`), so an installed package
runs its recipes from any folder.
"""

import copy
import dataclasses
import os
import typing
import warnings
from dataclasses import dataclass, field
from typing import Optional, Tuple

import yaml

from rankiqa.errors import InputError

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


class ConfigError(InputError):
    """A configuration file or override is invalid; the message names the key and the file."""


class ConfigDeprecation(FutureWarning):
    """A renamed config key or option was used; the message names its replacement."""


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class NetConfig:
    name: str = "resnet_v2_50"  # a key of rankiqa.nets.networks_map
    weight_decay: float = 1e-4  # L2 on convolution weights
    batch_norm_decay: float = 0.997  # moving statistics; short CPU runs want ~0.9
    # the blocks whose channel statistics a pooled head reads (vgg_16_pooled, efficientnet_*,
    # vit_s14: rankiqa.nets.pooled_blocks_map); empty: the network's default
    pooled_blocks: Tuple[str, ...] = ()


@dataclass(frozen=True)
class InitConfig:
    """Where a fresh run's weights come from (a rerun resumes from its own checkpoint first).

    In slim's terms `source` is ``--checkpoint_path`` and `exclude_scopes`
    ``--checkpoint_exclude_scopes``; in big_vision's, ``model_init`` and ``dont_load``.
    """

    # scratch | a checkpoint or training folder (a stage-one run, an official slim checkpoint)
    # | an .npz from export-npy | a pretrained start a package ships (hed-vgg16).
    # None: scratch for train-rank; finetune asks for one.
    source: Optional[str] = None
    # scopes left at their initialisers; None: the network's head (resnet_v2/logits), which
    # stage two re-learns and an ImageNet classifier would not fit
    exclude_scopes: Optional[Tuple[str, ...]] = None
    # the scope the source's names live under when it is not the network's; None: the
    # network's, or its official slim one (resnet_v2_50 ...) when the checkpoint has only that
    source_scope: Optional[str] = None
    ignore_missing: bool = False  # start model variables the source lacks from initialisers


@dataclass(frozen=True)
class RankDataConfig:
    rank_list: str = ""  # rank list written by `rankiqa make-rank-data` (CSV, see README)
    distortions: Tuple[str, ...] = ()  # which families to train on; empty: all in the list
    levels: int = 6  # pristine + 5 distortion levels; every group in the list must have them all
    crop_size: int = 224  # square random crop, the same for every level of one reference
    # a batch holds references_per_batch * levels images
    references_per_batch: int = 4
    holdout_references: int = 2  # references kept out of training for rank_accuracy
    cache_decoded: bool = True  # keep decoded images in memory after the first epoch
    eval_crop_size: int = 0  # view side for held-out evaluation; 0: crop_size
    eval_crops: int = 4  # views per image at evaluation, scores averaged
    # how they are placed (rankiqa.preprocessing.views.VIEW_MODES); every level of a group alike
    eval_crop_mode: str = "centre_random"


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "momentum"  # sgd | momentum | adam | rmsprop
    lr: float = 1e-4  # learning rate (before schedule and warm-up)
    lr_schedule: str = "constant"  # constant | exponential | cosine | piecewise
    lr_decay_steps: int = 10000  # exponential: lr * decay_rate ** (step / decay_steps)
    lr_decay_rate: float = 0.1  # exponential and piecewise: the factor per decay
    lr_boundaries: Tuple[int, ...] = ()  # piecewise: steps where lr is multiplied by decay_rate
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    momentum: float = 0.9  # momentum and rmsprop
    clip_gradient_norm: float = 0.0  # 0: no clipping


@dataclass(frozen=True)
class LoopConfig:
    """The session loop both stages share."""

    max_steps: int = 50000  # the final global step; a rerun trains on to it
    log_every: int = 50  # progress line
    summary_every: int = 100  # TensorBoard scalars
    save_every: int = 1000  # checkpoint
    eval_every: int = 1000  # held-out evaluation -> eval.json; 0: only at the end
    keep_checkpoints: int = 5  # the newest ones kept; older ones are deleted as new ones land
    seed: int = 0  # graph, crops and data order: the same seed, the same run
    # Input pipelines keep their order (crops are per-element seeded either way), so the same
    # seed gives the same batches; false lets parallel decode hand over whatever is ready first.
    deterministic: bool = True
    # where the step runs (rankiqa/train/distribute.py): auto | one_device | mirrored |
    # multi_worker; auto: multi_worker when TF_CONFIG names several tasks, mirrored over every
    # GPU when there are several, else one device
    strategy: str = "auto"
    devices: int = 0  # mirrored: replicas on this machine (0: every GPU)
    # fp32 | mixed (16-bit compute, float32 variables) | auto (mixed where the hardware computes
    # in 16 bits natively); fp32 by default, so that recorded figures replay to the last digit
    precision: str = "fp32"


@dataclass(frozen=True)
class TrainConfig(LoopConfig):
    loss: str = "operator"  # operator | pairwise (rankiqa.losses.rank_losses_map)
    margin: float = 100.0  # hinge margin; the RankIQA write-up uses 100 (un-normalised scores)
    # empty: train everything; e.g. [vgg_16/conv5, vgg_16/logits] keeps a pretrained start's
    # lower blocks as they are (and skips their gradients: ~2x faster for VGG-16)
    trainable_scopes: Tuple[str, ...] = ()
    # batch norm in inference mode (moving statistics, not updated): a pretrained start's
    # statistics kept, and per-replica batch statistics avoided in a distributed run
    frozen_batch_norm: bool = False


@dataclass(frozen=True)
class FinetuneTrainConfig(LoopConfig):
    loss: str = "l2"  # l2 (the paper's Euclidean loss) | l1
    # the run's model (what predict, evaluate and the exports use) is the checkpoint of its best
    # validation SROCC (kept in RUN/best/), not the last; false: the last, with a warning when
    # an earlier evaluation was better
    keep_best: bool = True
    # validation photos keep_best needs before it chooses among checkpoints: on fewer, SROCC's
    # 95 % interval is too wide to tell evaluations apart (0.6 on 100 photos: [0.45, 0.72]; on
    # 24: [0.25, 0.81]), and the best of several would mostly be the luckiest; the run's model
    # is then its last step
    keep_best_from: int = 100


@dataclass(frozen=True)
class RankConfig:
    """`rankiqa train-rank`: stage one."""

    net: NetConfig = field(default_factory=NetConfig)
    init: InitConfig = field(default_factory=InitConfig)
    data: RankDataConfig = field(default_factory=RankDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class MosDataConfig:
    dataset: str = "csv"  # a key of rankiqa.data.mos.datasets_map
    label_file: str = ""  # the dataset's label file (mos.csv, dmos.csv, mos_with_names.txt ...)
    image_root: Optional[str] = None  # None: the dataset's usual folder beside the label file
    # csv: the columns holding the image and its score; "": the first of the common spellings
    # (path, image, image_name, filename, file, name / score, mos, dmos, rating, quality)
    path_column: str = ""
    score_column: str = ""
    # more label files of the same kind whose images only ever join the training part (each
    # with its images in its usual folder): more data, a validation part that stays comparable
    extra_train_files: Tuple[str, ...] = ()
    # the label file's scale, mapped to [0, 1] with higher better for training and the figures;
    # the model's scores come back on it: () the dataset's own (rankiqa.data.mos.datasets_map;
    # csv: [0, 1]); e.g. [1, 5]
    score_range: Tuple[float, ...] = ()
    # None: the dataset's own; false for DMOS-like scores (lower is better), which are flipped
    higher_is_better: Optional[bool] = None
    val_fraction: float = 0.2  # by reference where the dataset has references
    test_fraction: float = 0.0  # a third part that neither training nor validation sees
    split_seed: int = 0  # the split's seed: the same seed, the same parts
    split_index: int = 0  # 0..N-1 for N independent repeated splits
    crop_size: int = 224  # square random training crop, and the views' side
    batch_size: int = 16  # labelled images per step
    cache_decoded: bool = False  # keep decoded training images in memory
    # each training crop from the image shrunk by a random factor (1 down to the whole picture
    # in the crop): the scales the `pyramid` crop mode evaluates
    random_scale: bool = False
    eval_crops: int = 5  # views per validation image, scores averaged
    eval_crop_mode: str = "grid"  # grid | random | pyramid | centre_random (rankiqa/preprocessing/views.py)


@dataclass(frozen=True)
class TransferConfig:
    """What stage two restores and trains, in tf-slim's vocabulary (``init`` says where from)."""

    trainable_scopes: Tuple[str, ...] = ()  # empty: train everything
    head_lr_multiplier: float = 10.0  # the paper trains the new head 10x faster
    # inference-mode batch norm while fine-tuning: statistics stay those of the start (the
    # usual choice for small batches; for vgg_16_pooled it keeps the probe's standardisation)
    frozen_batch_norm: bool = False


@dataclass(frozen=True)
class ProbeConfig:
    """The head fitted by ridge on frozen features before the first step
    (`rankiqa.train.probe`); with train.max_steps 0 this is the frozen-backbone model."""

    enabled: bool = False  # fit the head so, then train as configured (0 steps: nothing more)
    crops: int = 2  # views per training image (placed by data.eval_crop_mode), each a ridge row
    # ridge penalties the probe chooses from by cross-validated SROCC
    alphas: Tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0)
    folds: int = 5  # cross-validation folds that choose alpha (by SROCC)
    # the ranking-aware probe (rankiqa.train.probe.fit_ranked): the ridge head refitted so that
    # it also orders every level pair of `rank_groups` groups of signals.rank_list (a seeded
    # sample; their features cost levels x crops forward passes each) by signals.rank_margin,
    # the mean squared hinge weighted by this against the mean squared error; 0: plain ridge
    rank_weight: float = 0.0
    # "labels": the weight chosen from the number N of labelled training photos by the rule the
    # label-efficiency study measured (rankiqa.train.probe.weight_for_labels: 24 at 25 photos,
    # 3 at 100, 0.13 at 800), where signals.rank_list gives rank groups (plain ridge without
    # them); "": rank_weight as set
    rank_rule: str = ""
    rank_groups: int = 400  # rank groups the ranking-aware probe orders


@dataclass(frozen=True)
class AdaptConfig:
    """Few labels: a shipped model adapted to them instead of training (`rankiqa.train.adapt`,
    what `rankiqa calibrate` does): with fewer than `below` labelled photos, finetune maps the
    model's score onto them, moves its head toward them or fits a fresh head, whichever k-fold
    cross-validation over every label says, and writes that model into the run folder. (120
    labels of a user's own photos: every fresh-head path ended at held-out SROCC 0.49-0.59, the
    shipped models at 0.79-0.84; docs/label-efficiency.md, "Your own kind of photo".)"""

    below: int = 0  # labelled photos under which finetune adapts instead of training; 0: never
    model: str = ""  # the model adapted: a built-in model or a run; "": the default built-in
    head: str = "auto"  # auto (cross-validated choice) | calibrate | centred | fresh
    folds: int = 5  # cross-validation folds, repeated three times


@dataclass(frozen=True)
class SignalsConfig:
    """What stage two learns from, each signal with its weight (`rankiqa.train.signals`): the
    labels' MOS; stage one's ranking hinge on rank groups, which keeps what it taught (a
    fine-tuned model otherwise forgets how distortions rank, `rankiqa ladders`); a teacher's
    judgement of many views (`rankiqa teach`)."""

    mos_weight: float = 1.0  # the MOS regression's weight (0: the teacher and ranking only)
    # the ranking hinge on the groups of a rank list (make-rank-data; references from the
    # training part only) beside the regression; "": none
    rank_list: str = ""
    rank_weight: float = 1.0  # the ranking hinge's weight beside the regression loss
    rank_references_per_batch: int = 2  # groups per step, each with all its levels
    rank_loss: str = "operator"  # rankiqa.losses.rank_losses_map
    rank_margin: float = 0.05  # in score units: scores are normalised MOS in [0, 1]
    # with finetune.frozen_batch_norm false, how the rank images are normalised while training:
    # "batch": in one pass with the photos (their batch's statistics, which tell the hinge how
    # the images of a group differ from each other); "moving": in a second pass on the moving
    # statistics, as every image is at evaluation (a second forward pass of their size)
    rank_batch_norm: str = "batch"
    # a teacher's judgement (a student learns the views of `rankiqa teach`'s teacher.csv, each
    # placed as the teacher saw it): regression on the teacher's score of every cached view
    teacher_table: str = ""  # "": no teacher
    teacher_weight: float = 1.0  # the teacher regression's weight beside the MOS regression
    teacher_views_per_batch: int = 16  # teacher views per step, beside data.batch_size photos
    # people's comparisons (`rankiqa rate`'s judgement file): a Thurstone likelihood on the
    # difference of the two photos' scores, P(left chosen) = Phi((s_left - s_right) / scale);
    # pairs naming a validation or test photo are left out. "": none (a judgement file as
    # data.label_file names it here too)
    judgements: str = ""
    judgement_weight: float = 1.0  # its weight beside the MOS regression
    judgement_pairs_per_batch: int = 8  # pairs a step, two photos each
    # the observers' noise in score units (normalised MOS in [0, 1]): one scale apart, 84 %
    # prefer the better photo
    judgement_scale: float = 0.1


@dataclass(frozen=True)
class FinetuneConfig:
    """`rankiqa finetune` (stage two) and `rankiqa evaluate`."""

    net: NetConfig = field(default_factory=NetConfig)
    init: InitConfig = field(default_factory=InitConfig)
    data: MosDataConfig = field(default_factory=MosDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    finetune: TransferConfig = field(default_factory=TransferConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    signals: SignalsConfig = field(default_factory=SignalsConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)


# --------------------------------------------------------------------------- ranges

# dotted key -> (lowest, highest) allowed, inclusive; None: unbounded. Checked for every config
# class that has the key, so a bad value fails at load, naming file and key, not mid-training.
RANGES = {
    "net.weight_decay": (0, None), "net.batch_norm_decay": (0, 1),
    "data.levels": (2, None), "data.crop_size": (1, None), "data.references_per_batch": (1, None),
    "data.holdout_references": (0, None), "data.eval_crop_size": (0, None),
    "data.eval_crops": (1, None), "data.batch_size": (1, None),
    "data.val_fraction": (0, 0.99), "data.test_fraction": (0, 0.99),
    "data.split_seed": (0, None), "data.split_index": (0, None),
    "optim.lr": (0, None), "optim.lr_decay_steps": (1, None), "optim.lr_decay_rate": (0, None),
    "optim.warmup_steps": (0, None), "optim.momentum": (0, 1),
    "optim.clip_gradient_norm": (0, None),
    "train.max_steps": (0, None), "train.log_every": (0, None), "train.summary_every": (0, None),
    "train.save_every": (0, None), "train.eval_every": (0, None),
    "train.keep_checkpoints": (1, None), "train.seed": (0, 2**31 - 1), "train.devices": (0, None),
    "finetune.head_lr_multiplier": (0, None),
    "probe.crops": (1, None), "probe.folds": (2, None), "probe.rank_weight": (0, None),
    "probe.rank_groups": (1, None), "adapt.below": (0, None), "train.keep_best_from": (2, None), "adapt.folds": (2, None),
    "signals.mos_weight": (0, None), "signals.rank_weight": (0, None),
    "signals.rank_references_per_batch": (1, None), "signals.rank_margin": (0, None),
    "signals.teacher_weight": (0, None), "signals.teacher_views_per_batch": (1, None),
}


def _show(value, limit=80):
    """`value` quoted for a message, at most `limit` characters: a message quotes what was
    given, never megabytes of it."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# a config is a few hundred values; YAML aliases can make a 1 KB file expand to billions
MAX_VALUES = 100_000


def _check_size(raw, source):
    """Refuses `raw` when it expands to more than `MAX_VALUES` values (aliases counted every
    time they are used, as building the config would): found in at most that many steps."""
    count, stack = 0, [raw]
    while stack:
        value = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(f"{source}: expands to over {MAX_VALUES:,} values (YAML aliases "
                              "repeating a list?); a config holds a few hundred")
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return raw


def _check_ranges(config, source):
    for key, (low, high) in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section, None), name, None)
        if value is None:
            continue
        if not (low is None or value >= low) or not (high is None or value <= high):
            bound = (f"in [{low}, {high}]" if low is not None and high is not None
                     else f">= {low}" if low is not None else f"<= {high}")
            raise ConfigError(f"{source}: {key} must be {bound}, got {_show(value)}")
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (the second would silently win)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _yaml_error(path, error):
    """One line: file:line: what is wrong."""
    mark = getattr(error, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else path
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return ConfigError(f"{where}: invalid YAML: {problem}")


# --------------------------------------------------------------------------- loading


def _type_name(tp):
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value, tp, key, source):
    """Checks `value` against the annotation `tp`; returns it converted (lists -> tuples)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, source)
    if origin in (tuple, Tuple):
        (inner, *_rest) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {_show(value)}")
        return tuple(_coerce(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping of {_type_name(tp)} keys")
        return _build(tp, value, source, prefix=f"{key}.")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{source}: {key} must be true or false, got {_show(value)}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{source}: {key} must be an integer, got {_show(value)}")
    if not isinstance(value, tp):
        raise ConfigError(f"{source}: {key} must be {_type_name(tp)}, got {_show(value)} "
                          f"({type(value).__name__})")
    return value


def _build(cls, raw, source, prefix=""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(raw) - names))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        shown = key.encode("ascii", "backslashreplace").decode()
        if shown != key:  # a look-alike letter (Cyrillic a) would print as the valid key
            shown += " (it holds characters that are not ASCII, shown escaped)"
        raise ConfigError(
            f"{source}: unknown key {shown}; {_type_name(cls)} takes "
            f"{', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], prefix + k, source) for k, v in raw.items()}
    return cls(**kwargs)


def _apply_override(raw, override):
    if "=" not in override:
        raise ConfigError(f"--set {_show(override)}: expected key=value, e.g. train.max_steps=100")
    key, text = override.split("=", 1)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: cannot parse {_show(text)}: {e}") from None
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = value


# old dotted key -> new dotted key; applied where the new key exists in the config class
RENAMED = {
    "net.init_checkpoint": "init.source",
    "net.init_from": "init.source",
    "net.init_checkpoint_scope": "init.source_scope",
    "finetune.checkpoint_exclude_scopes": "init.exclude_scopes",
    "finetune.ignore_missing_vars": "init.ignore_missing",
    "data.images_per_batch": "data.references_per_batch",
}

# stage two's keys that moved out of `finetune` into sections of their own: refused in a config
# a user writes, with the new name; moved silently in a run's recorded config (rankiqa.json), so
# that earlier runs still evaluate and resume
MOVED = {
    "finetune.probe": "probe.enabled", "finetune.probe_crops": "probe.crops",
    "finetune.probe_alphas": "probe.alphas", "finetune.probe_folds": "probe.folds",
    "finetune.probe_rank_weight": "probe.rank_weight",
    "finetune.probe_rank_rule": "probe.rank_rule",
    "finetune.probe_rank_groups": "probe.rank_groups",
    "finetune.mos_weight": "signals.mos_weight", "finetune.rank_list": "signals.rank_list",
    "finetune.rank_weight": "signals.rank_weight",
    "finetune.rank_references_per_batch": "signals.rank_references_per_batch",
    "finetune.rank_loss": "signals.rank_loss", "finetune.rank_margin": "signals.rank_margin",
    "finetune.rank_batch_norm": "signals.rank_batch_norm",
    "finetune.teacher_table": "signals.teacher_table",
    "finetune.teacher_weight": "signals.teacher_weight",
    "finetune.teacher_views_per_batch": "signals.teacher_views_per_batch",
}


def _has_key(cls, dotted):
    section, key = dotted.split(".")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if section not in fields:
        return False
    return key in {f.name for f in dataclasses.fields(typing.get_type_hints(cls)[section])}


def _migrate(cls, raw, source, notify):
    """Moves renamed keys of `raw` to their new names, with a notice for each."""
    for old, new in RENAMED.items():
        (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
        section = raw.get(old_section)
        if not isinstance(section, dict) or old_key not in section or not _has_key(cls, new):
            continue
        value = section.pop(old_key)
        if old == "finetune.checkpoint_exclude_scopes" and value == []:
            value = None  # the old key's empty list meant "the head", as init's None does
        if value is None:
            notify(f"{source}: {old} is renamed {new}; the null value was dropped")
            continue
        target = raw.setdefault(new_section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{source}: {new_section} must be a mapping")
        if target.get(new_key) is not None and target[new_key] != value:
            raise ConfigError(f"{source}: {old} (renamed {new}) and {new} are both set; keep {new}")
        target[new_key] = value
        notify(f"{source}: {old} is renamed {new}; it still works for now")


def _moved(cls, raw, source, recorded):
    """Refuses the keys of `MOVED` in `raw`, naming the new key; with `recorded` (a run's own
    rankiqa.json) moves them there instead."""
    for old, new in MOVED.items():
        (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
        section = raw.get(old_section)
        if not isinstance(section, dict) or old_key not in section or not _has_key(cls, new):
            continue
        if not recorded:
            raise ConfigError(f"{source}: {old} is now {new} (stage two's probe and training "
                              "signals have sections of their own); rename the key")
        target = raw.setdefault(new_section, {})
        target[new_key] = section.pop(old_key)


def shipped_config(name):
    """Path of a config shipped in the package (``rank_tiny`` or ``rank_tiny.yaml``), or None."""
    base = os.path.basename(name)
    if base != name:
        return None
    path = os.path.join(SHIPPED_DIR, name if name.endswith(".yaml") else name + ".yaml")
    return path if os.path.isfile(path) else None


def shipped_configs():
    return sorted(f[:-5] for f in os.listdir(SHIPPED_DIR) if f.endswith(".yaml"))


def _warn(message):
    warnings.warn(message, ConfigDeprecation, stacklevel=3)


def load(cls, path=None, overrides=(), notify=None):
    """Builds config class `cls` from YAML file `path` (optional) and ``key=value`` overrides.

    Args:
      path: a YAML file, or the name of a shipped config (`shipped_config`).
      notify: callable for one-line notices (renamed keys); default: a `ConfigDeprecation`
        warning.

    Raises:
      ConfigError: unreadable file, bad YAML, unknown key, wrong type.
    """
    notify = notify or _warn
    if path is not None and not os.path.isfile(path) and shipped_config(path):
        path = shipped_config(path)
    source = path or "<defaults>"
    raw = {}
    if path is not None:
        if not os.path.isfile(path):  # a FIFO or a device is never opened: it could block
            what = ("is not a regular file (a folder, a FIFO or a device)"
                    if os.path.exists(path) else "does not exist")
            raise ConfigError(f"config file {path} {what} (shipped configs: "
                              f"{', '.join(shipped_configs())})")
        try:
            raw = yaml.load(_yaml_text(path), Loader=_UniqueKeyLoader) or {}
        except yaml.YAMLError as e:
            raise _yaml_error(path, e) from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return from_dict(cls, raw, source, overrides, notify)


def _yaml_text(path):
    """A YAML file's text: UTF-8 (with or without a BOM) or UTF-16 with its BOM; another
    encoding is refused with the line and byte rather than guessed."""
    with open(path, "rb") as f:
        data = f.read()
    utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
    try:
        return data.decode("utf-16" if utf16 else "utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}:{line}: not {'UTF-16' if utf16 else 'UTF-8'} text (byte "
                          f"0x{data[e.start]:02x}); save it as UTF-8 (iconv -f latin1 -t utf-8 "
                          f"{path} > utf8.yaml)") from None


def from_dict(cls, raw, source, overrides=(), notify=None, recorded=False):
    """Builds `cls` from plain data (a YAML file's, a run folder's recorded config) and
    ``key=value`` overrides: renamed keys migrated, types and ranges checked; errors name
    `source`. `recorded`: `raw` is a run's own record, whose moved keys (`MOVED`) move."""
    raw = copy.deepcopy(_check_size(raw, source))  # before anything walks every value
    notify = notify or _warn
    _migrate(cls, raw, source, notify)
    _moved(cls, raw, source, recorded)
    if overrides:
        source = source if "--set" in source else f"{source} (with --set)"
    for override in overrides:
        _apply_override(raw, override)
    _check_size(raw, source)
    _migrate(cls, raw, source, notify)
    _moved(cls, raw, source, recorded=False)
    return _check_ranges(_build(cls, raw, source), source)


def to_dict(config):
    """The config as plain data (for writing beside a checkpoint)."""
    return dataclasses.asdict(config)
