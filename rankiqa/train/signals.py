"""Stage two's training signals, each one small object: its data, its part of the batch, its
loss and its weight. `rankiqa.train.finetune` composes them and never branches on which there
are; a new signal (people's comparisons, say) is one more class here and one line in
`from_config`.

Every signal is a frozen dataclass built from the config (`from_config`) and then loaded
(``load(parts, skip_bad, log)`` returns a copy holding its data: nothing is filled in later).
Each gives:

- ``name``: its key in the batch and the prefix of its figures;
- ``weight``: its loss's weight in the sum (``signals.*_weight``);
- ``batch``: (its global batch size, the config key), checked to split over the replicas;
- ``own_pass``: scored in a pass of its own on the moving batch-norm statistics while the
  rest share one training-mode pass (`RankHinge` with ``signals.rank_batch_norm: moving``);
- ``dataset(seed, deterministic)``: a tf.data stream of ``{"images": uint8 [n, crop, crop, 3],
  ...}`` batches, whatever else its loss needs beside the images;
- ``loss(scores, batch)``: ``(loss, {figure: scalar})`` from its images' scores ``[n]``.
"""

import os
from dataclasses import dataclass, replace
from typing import Optional, Tuple

from rankiqa import losses
from rankiqa.compat import tf
from rankiqa.data import images as images_lib
from rankiqa.data import judgements as judgements_lib
from rankiqa.data import lists, pipeline
from rankiqa.data import teacher as teacher_lib
from rankiqa.errors import InputError


def held_out(parts):
    """The real paths of the validation and test photos: no signal may train on them."""
    return {os.path.realpath(it.path) for it in parts["val"] + parts["test"]}


def check_unlabelled(paths, parts, list_file, skip_bad, what, log):
    """Decodes once each of `paths` that the label file does not name (those were checked with
    it): the unreadable ones, to leave out with `skip_bad`, else refused by name."""
    checked = {os.path.realpath(it.path) for it in parts["all"]}
    unchecked = sorted({p for p in paths if os.path.realpath(p) not in checked})
    return images_lib.refuse_or_skip(images_lib.check_images(unchecked, list_file), skip_bad,
                                     what, log)


@dataclass(frozen=True)
class Mos:
    """The labels: regression of one training view per photo on its normalised MOS
    (``data.batch_size`` photos a step; `train.loss` l2 or l1)."""

    weight: float
    per_step: int
    loss_name: str
    crop_size: int
    cache: bool = False
    random_scale: bool = False
    paths: Tuple[str, ...] = ()
    scores: Tuple[float, ...] = ()
    name: str = "mos"
    own_pass: bool = False

    @property
    def batch(self):
        return self.per_step, "data.batch_size"

    def load(self, parts, skip_bad, log):
        train = parts["train"]
        return replace(self, paths=tuple(it.path for it in train),
                       scores=tuple(it.score for it in train))

    def dataset(self, seed, deterministic):
        return pipeline.mos_dataset(
            list(self.paths), list(self.scores), self.crop_size, self.per_step, seed=seed,
            cache=self.cache, deterministic=deterministic,
            random_scale=self.random_scale).map(lambda x, y: {"images": x, "targets": y})

    def loss(self, scores, batch):
        value = losses.get_regression_loss_fn(self.loss_name)(scores, batch["targets"])
        return value, {"loss": value}


@dataclass(frozen=True)
class Teacher:
    """A teacher's judgement: regression on its score of every view it saw (`rankiqa teach`'s
    teacher.csv), each view placed as it placed it."""

    table: str
    weight: float
    per_step: int
    loss_name: str
    crop_size: int
    paths: Tuple[str, ...] = ()
    specs: Tuple[tuple, ...] = ()
    scores: Tuple[float, ...] = ()
    name: str = "teacher"
    own_pass: bool = False

    @property
    def batch(self):
        return self.per_step, "signals.teacher_views_per_batch"

    def load(self, parts, skip_bad, log):
        """Refuses a teacher's view of a validation or test photo (the student would learn the
        photos it is then judged on) and one that cannot be read, now, not at the step that
        draws it."""
        paths, specs, scores = teacher_lib.read_table(self.table)
        held = held_out(parts)
        leaked = sorted({p for p in paths if os.path.realpath(p) in held})
        if leaked:
            raise InputError(f"{self.table}: {len(leaked)} of its photos are in the validation "
                             f"or test part (e.g. {leaked[0]}); teach on this config's "
                             "training part")
        check_unlabelled(paths, parts, self.table, False, "teacher", log)
        log(f"third signal: the teacher's scores of {len(paths)} views of "
            f"{len(set(paths))} photos ({self.table})")
        return replace(self, paths=tuple(paths), specs=tuple(map(tuple, specs)),
                       scores=tuple(scores))

    def dataset(self, seed, deterministic):
        return pipeline.teacher_dataset(
            list(self.paths), self.specs, list(self.scores), self.crop_size,
            self.per_step, seed=seed,
            deterministic=deterministic).map(lambda x, y: {"images": x, "targets": y})

    def loss(self, scores, batch):
        value = losses.get_regression_loss_fn(self.loss_name)(scores, batch["targets"])
        return value, {"teacher_loss": value}


@dataclass(frozen=True)
class RankHinge:
    """Stage one's ranking hinge on the groups of a rank list (each reference with all its
    levels, best first): what stage one taught, kept while the MOS is learnt."""

    rank_list: str
    weight: float
    references_per_step: int
    loss_name: str
    margin: float
    crop_size: int
    own_pass: bool = False
    cache: bool = False
    groups: Tuple[lists.RankGroup, ...] = ()
    name: str = "rank"

    @property
    def batch(self):
        return self.references_per_step, "signals.rank_references_per_batch"

    @property
    def levels(self):
        return len(self.groups[0].paths)

    def load(self, parts, skip_bad, log):
        """The groups of the rank list, every image checked now (`images_lib.usable_groups`)."""
        groups = images_lib.usable_groups(lists.read_rank_list(self.rank_list), self.rank_list,
                                          skip_bad, log)
        if not groups:
            raise InputError(f"{self.rank_list}: no rank group left")
        pipeline.check_sizes(groups, self.crop_size)
        log(f"second loss: ranking on {len(groups)} groups of {self.rank_list}")
        return replace(self, groups=tuple(groups))

    def dataset(self, seed, deterministic):
        return pipeline.rank_dataset(
            list(self.groups), self.crop_size, self.references_per_step, seed=seed,
            cache=self.cache, deterministic=deterministic).map(lambda x: {"images": x})

    def loss(self, scores, batch):
        grouped = tf.reshape(scores, [-1, self.levels])  # [references, levels], best first
        value = losses.get_rank_loss_fn(self.loss_name)(grouped, self.margin)
        return value, {"rank_loss": value, "rank_accuracy": losses.ranking_accuracy(grouped)}


@dataclass(frozen=True)
class Judged:
    """People's comparisons (a judgement file, `rankiqa rate`): a Thurstone likelihood on the
    difference of each pair's two scores. Pairs naming a validation or test photo are left
    out (the model would learn the photos it is judged on); photos nobody labelled are
    welcome."""

    judgement_file: str
    weight: float
    per_step: int
    scale: float
    crop_size: int
    random_scale: bool = False
    lefts: Tuple[str, ...] = ()
    rights: Tuple[str, ...] = ()
    outcomes: Tuple[float, ...] = ()
    name: str = "judged"
    own_pass: bool = False

    @property
    def batch(self):
        return self.per_step, "signals.judgement_pairs_per_batch"

    def load(self, parts, skip_bad, log):
        read = judgements_lib.read_pairs(self.judgement_file)
        for problem in read.problems():
            log(f"warning: {self.judgement_file}: {problem}")
        held = held_out(parts)
        kept = [g for g in read.judgements
                if not {os.path.realpath(g.left), os.path.realpath(g.right)} & held]
        bad = check_unlabelled([p for g in kept for p in (g.left, g.right)], parts,
                               self.judgement_file, skip_bad, "judged", log)
        kept = [g for g in kept if g.left not in bad and g.right not in bad]
        if len(kept) < self.per_step:
            raise InputError(f"{self.judgement_file}: {len(kept)} answers left on training "
                             f"photos, fewer than signals.judgement_pairs_per_batch "
                             f"{self.per_step}")
        log(f"people's comparisons: {len(kept)} answers on "
            f"{len({p for g in kept for p in (g.left, g.right)})} photos "
            f"({len(read.judgements) - len(kept)} left out: a validation or test photo, or "
            f"unreadable) from {self.judgement_file}")
        return replace(self, lefts=tuple(g.left for g in kept),
                       rights=tuple(g.right for g in kept),
                       outcomes=tuple(g.outcome for g in kept))

    def dataset(self, seed, deterministic):
        return pipeline.pair_dataset(
            list(self.lefts), list(self.rights), list(self.outcomes), self.crop_size,
            self.per_step, seed=seed, deterministic=deterministic,
            random_scale=self.random_scale).map(lambda x, o: {"images": x, "outcomes": o})

    def loss(self, scores, batch):
        pairs = tf.reshape(scores, [-1, 2])  # rows: left, right
        outcomes = batch["outcomes"]
        value = losses.thurstone_pair_loss(pairs[:, 0], pairs[:, 1], outcomes, self.scale)
        decided = tf.cast(tf.not_equal(outcomes, 0.5), tf.float32)
        agree = tf.cast(tf.equal(pairs[:, 0] > pairs[:, 1], outcomes > 0.5), tf.float32)
        accuracy = tf.reduce_sum(agree * decided) / tf.maximum(tf.reduce_sum(decided), 1.0)
        return value, {"judged_loss": value, "judged_accuracy": accuracy}


def from_config(config):
    """The signals a `rankiqa.config.FinetuneConfig` trains on, in the order their images are
    scored (the MOS always; the teacher, the ranking hinge and people's comparisons where
    their files are named)."""
    data, signals, train = config.data, config.signals, config.train
    found = [Mos(signals.mos_weight, data.batch_size, train.loss, data.crop_size,
                 cache=data.cache_decoded, random_scale=data.random_scale)]
    if signals.teacher_table:
        found.append(Teacher(signals.teacher_table, signals.teacher_weight,
                             signals.teacher_views_per_batch, train.loss, data.crop_size))
    if signals.rank_list:
        losses.get_rank_loss_fn(signals.rank_loss)  # an unknown name fails before any work
        found.append(RankHinge(
            signals.rank_list, signals.rank_weight, signals.rank_references_per_batch,
            signals.rank_loss, signals.rank_margin, data.crop_size,
            own_pass=signals.rank_batch_norm == "moving" and not config.finetune.frozen_batch_norm,
            cache=data.cache_decoded))
    if signals.judgements:
        if signals.judgement_scale <= 0:
            raise InputError(f"signals.judgement_scale must be > 0, got "
                             f"{signals.judgement_scale}")
        found.append(Judged(signals.judgements, signals.judgement_weight,
                            signals.judgement_pairs_per_batch, signals.judgement_scale,
                            data.crop_size, random_scale=data.random_scale))
    losses.get_regression_loss_fn(train.loss)
    return tuple(found)


def find(signals, name) -> Optional[object]:
    """The signal called `name` among `signals`, or None."""
    return next((s for s in signals if s.name == name), None)
