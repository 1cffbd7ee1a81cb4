"""What each command refuses before TensorFlow starts.

Importing TensorFlow takes 3-10 s on a 2-core CPU. A model that does not exist, a label file
without its score column, a rank list naming a missing image or photos that are not there are
named before that, in well under a second: each check reads only what its command reads first
anyway (a CSV, a rank list, a ``rankiqa.json``). The command itself still checks as it works,
since files can change in between. NumPy only.
"""

import os

from rankiqa.weights import builtin
from rankiqa.data import judgements, lists, mos, teacher
from rankiqa.errors import InputError


def model(ref, net=None):
    """`rankiqa.weights.builtin.resolve`'s (kind, info) of a model reference, or its InputError."""
    return builtin.resolve(ref, net)


def is_judgement_file(path):
    """Whether `path` is a judgement file (`rankiqa rate`'s), not a label file."""
    return bool(path) and os.path.isfile(path) and \
        judgements.header_of(path) == judgements.PAIR_HEADER


def labels(data_cfg):
    """Reads and splits the label file of `data_cfg` (`rankiqa.config.MosDataConfig`): columns,
    scores, the images' existence and the split (`rankiqa.data.mos.load_splits`)."""
    mos.load_splits(data_cfg)


def rank_list(path, levels=None, distortions=()):
    """Reads a rank list: its columns, groups and the images' existence."""
    lists.read_rank_list(path, levels=levels, distortions=distortions)


def train_rank_config(config):
    """Refuses a `rankiqa.config.RankConfig` stage one cannot train: no rank list."""
    if not config.data.rank_list:
        raise InputError("train-rank needs data.rank_list (make one with `rankiqa make-rank-data`)")


def train_rank(config):
    """`train_rank_config`, then the rank list it names."""
    train_rank_config(config)
    rank_list(config.data.rank_list, config.data.levels, config.data.distortions)


def finetune_config(config):
    """Refuses a `rankiqa.config.FinetuneConfig` stage two cannot train: no start, no label
    file, a probe weight without its rank groups."""
    if not config.init.source:
        raise InputError("finetune needs a start: --init STAGE_ONE_DIR (the stage-one output "
                         "directory), a pretrained name such as hed-vgg16, or scratch")
    if not config.data.label_file:
        raise InputError("finetune needs data.label_file (the dataset's label file)")
    probe, signals = config.probe, config.signals
    if probe.rank_rule not in ("", "labels"):
        raise InputError(f"unknown probe.rank_rule {probe.rank_rule!r}; "
                         "choose from '' (probe.rank_weight as set) and 'labels'")
    if signals.rank_batch_norm not in ("batch", "moving"):
        raise InputError(f"unknown signals.rank_batch_norm {signals.rank_batch_norm!r}; "
                         "choose from batch (the rank images in the photos' batch) and moving "
                         "(the rank images on the moving statistics)")
    if config.adapt.head not in ("auto", "calibrate", "centred", "fresh"):
        raise InputError(f"unknown adapt.head {config.adapt.head!r}; choose from auto, "
                         "calibrate, centred, fresh")
    if probe.rank_weight and not (probe.enabled and signals.rank_list):
        raise InputError("probe.rank_weight needs probe.enabled and a "
                         "signals.rank_list whose groups the probe orders")


def finetune(config):
    """`finetune_config`, then the files it names: the label file, the second loss's rank
    list and the teacher table."""
    finetune_config(config)
    if is_judgement_file(config.data.label_file):  # scaled into labels by finetune itself
        judgements.read_pairs(config.data.label_file)
    else:
        labels(config.data)
    if config.signals.judgements:
        judgements.read_pairs(config.signals.judgements)
    if config.signals.rank_list:
        rank_list(config.signals.rank_list)
    if config.signals.teacher_table:
        teacher.read_table(config.signals.teacher_table)
