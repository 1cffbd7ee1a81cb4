"""Starting a graph from a checkpoint it was not saved from, and saying exactly what happened.

Used by stage one (an official slim ImageNet checkpoint, scope renamed, classifier skipped) and by
stage two (the stage-one checkpoint minus the quality head). Every call returns a `RestoreReport`:
what was restored, what the model has that the checkpoint lacks, what the checkpoint has that the
model does not use, what was excluded, and which shapes did not match.
"""

import os
from dataclasses import dataclass, field
from typing import List, Tuple

from rankiqa.compat import slim, tf


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


@dataclass
class RestoreReport:
    checkpoint: str
    restored: List[Tuple[str, str]] = field(default_factory=list)  # (model var, checkpoint name)
    excluded: List[str] = field(default_factory=list)  # model vars left out by exclude scopes
    missing: List[str] = field(default_factory=list)  # model vars the checkpoint does not have
    shape_mismatch: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    unused: List[str] = field(default_factory=list)  # checkpoint names no model var took

    def lines(self):
        """Human-readable report, one fact per line."""
        out = [f"restored {len(self.restored)} variables from {self.checkpoint}"]
        out += [f"  excluded (left at initialiser): {n}" for n in self.excluded]
        out += [f"  not in checkpoint (left at initialiser): {n}" for n in self.missing]
        out += [f"  shape mismatch (left at initialiser): {n} model {m} checkpoint {c}"
                for n, m, c in self.shape_mismatch]
        if self.unused:
            out.append(f"  {len(self.unused)} checkpoint tensors unused, e.g. "
                       f"{', '.join(self.unused[:3])}")
        return out

    def as_dict(self):
        return {"checkpoint": self.checkpoint, "restored": [m for m, _ in self.restored],
                "excluded": self.excluded, "missing": self.missing,
                "shape_mismatch": [[n, list(m), list(c)] for n, m, c in self.shape_mismatch],
                "unused": self.unused}


def resolve_checkpoint(path):
    """A checkpoint prefix from a prefix or a training directory (its latest checkpoint)."""
    if path is None:
        raise CheckpointError("no checkpoint given")
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"{path} is a folder with no checkpoint in it")
        return latest
    if tf.io.gfile.exists(path + ".index") or tf.io.gfile.exists(path):
        return path
    raise CheckpointError(f"checkpoint {path} does not exist (give a prefix like "
                          "model.ckpt-1000 or a training directory)")


def in_scopes(name, scopes):
    """Whether variable `name` lies in one of `scopes` (``a/b`` matches ``a/b`` and ``a/b/...``)."""
    return any(name == s.rstrip("/") or name.startswith(s.rstrip("/") + "/") for s in scopes)


def _strip(name):
    return name.split(":")[0]


def build_restore_map(checkpoint, variables=None, exclude_scopes=(), name_map=(),
                      ignore_missing_vars=False, skip_optimizer=True):
    """Matches model variables to checkpoint tensors.

    Args:
      checkpoint: prefix or training directory.
      variables: model variables to fill (default: all model variables of the default graph).
      exclude_scopes: scopes left out (`slim.get_variables_to_restore(exclude=...)`).
      name_map: ``[(model_prefix, checkpoint_prefix)]``: a model variable whose name starts with
        ``model_prefix`` is looked up with that prefix replaced (``resnet_v2/`` ->
        ``resnet_v2_50/`` for an official checkpoint).
      ignore_missing_vars: if False, a model variable absent from the checkpoint is an error.

    Returns:
      (``{checkpoint name: variable}``, `RestoreReport`).

    Raises:
      CheckpointError: unreadable checkpoint, nothing matches, or missing variables when
        `ignore_missing_vars` is False.
    """
    checkpoint = resolve_checkpoint(checkpoint)
    try:
        shapes = dict(tf.train.list_variables(checkpoint))
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {checkpoint}: {e}") from None
    if variables is None:
        variables = slim.get_model_variables()
    exclude_scopes = tuple(s.strip().rstrip("/") for s in exclude_scopes if s.strip())
    kept = slim.get_variables_to_restore(include=[v.op.name for v in variables],
                                         exclude=list(exclude_scopes)) if exclude_scopes else variables
    kept_names = {v.op.name for v in kept}
    report = RestoreReport(checkpoint)
    assignment = {}
    for var in variables:
        name = _strip(var.op.name)
        if name not in kept_names:
            report.excluded.append(name)
            continue
        ckpt_name = name
        for model_prefix, ckpt_prefix in name_map:
            if name.startswith(model_prefix):
                ckpt_name = ckpt_prefix + name[len(model_prefix):]
                break
        if ckpt_name not in shapes:
            report.missing.append(name)
            continue
        model_shape = tuple(var.shape.as_list())
        if tuple(shapes[ckpt_name]) != model_shape:
            report.shape_mismatch.append((name, model_shape, tuple(shapes[ckpt_name])))
            continue
        assignment[ckpt_name] = var
        report.restored.append((name, ckpt_name))
    used = set(assignment)
    optimizer_words = ("Momentum", "Adam", "RMSProp", "global_step", "ExponentialMovingAverage",
                       "beta1_power", "beta2_power")
    report.unused = sorted(n for n in shapes if n not in used
                           and not (skip_optimizer and any(w in n for w in optimizer_words)))
    if not assignment:
        raise CheckpointError(
            f"checkpoint {checkpoint} matches no model variable (model has e.g. "
            f"{[v.op.name for v in variables[:2]]}, checkpoint has e.g. {sorted(shapes)[:2]})")
    if (report.missing or report.shape_mismatch) and not ignore_missing_vars:
        problems = report.missing + [n for n, _, _ in report.shape_mismatch]
        raise CheckpointError(
            f"checkpoint {checkpoint} lacks {len(problems)} model variables (e.g. {problems[:3]}); "
            "set ignore_missing_vars to start those from their initialisers")
    return assignment, report


def build_init_fn(assignment, checkpoint):
    """``init_fn(session)`` that restores `assignment` from `checkpoint` (after global init)."""
    saver = tf.train.Saver(var_list=assignment)
    checkpoint = resolve_checkpoint(checkpoint)

    def init_fn(session):
        saver.restore(session, checkpoint)

    return init_fn
