"""Starting weights: one loader for every source, one report, one list of non-model variables.

A *source* is one of:

- ``scratch``: no weights, every variable keeps its initialiser;
- a training directory or checkpoint prefix (a stage-one run, an official slim ImageNet
  checkpoint: `source_scope` maps our scope onto theirs);
- an ``.npz`` (or pickled-dict ``.npy``) file from ``rankiqa export-npy``;
- a named pretrained start that a package ships (`rankiqa.pretrained.PRETRAINED`).

`build_init` matches a graph's variables to the source by name (minus excluded scopes) and
returns ``init_fn(session)`` and a `RestoreReport`: what was restored, excluded, missing, of
another shape, and what the source holds that no variable took. The order in which a run starts
is stated once, in `rankiqa.train.loop.run_loop`: resume from the run's own checkpoint, else this
init, else the initialisers.
"""

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

import numpy as np

from rankiqa import pretrained, rundir
from rankiqa.compat import slim, tf
from rankiqa.errors import InputError

SCRATCH = "scratch"
# Optimizer slots and bookkeeping: never part of "the model".
NON_MODEL_WORDS = ("/Adam", "/Momentum", "/RMSProp", "global_step", "beta1_power",
                   "beta2_power", "ExponentialMovingAverage")


class CheckpointError(InputError):
    """Weights are missing, unreadable, or do not fit the model."""


def is_model_variable(name):
    return not any(w in name for w in NON_MODEL_WORDS)


def in_scopes(name, scopes):
    """Whether variable `name` lies in one of `scopes` (``a/b`` matches ``a/b`` and ``a/b/...``)."""
    return any(name == s.rstrip("/") or name.startswith(s.rstrip("/") + "/") for s in scopes)


def resolve_checkpoint(path):
    """A checkpoint prefix from a prefix or a training directory (its latest checkpoint)."""
    if path is None:
        raise CheckpointError("no checkpoint given")
    if os.path.isdir(path):
        # by listing the folder: its index may name another folder's files (a copied run)
        latest = rundir.latest_checkpoint(path)
        if latest is None:
            indexed = tf.train.latest_checkpoint(path)  # e.g. merge-ckpt's model.ckpt
            if indexed and os.path.dirname(os.path.abspath(indexed)) == os.path.abspath(path):
                latest = indexed
        if latest is None:
            raise CheckpointError(f"{path} is a folder with no checkpoint in it")
        return latest
    if tf.io.gfile.exists(path + ".index") or tf.io.gfile.exists(path):
        return path
    raise CheckpointError(f"checkpoint {path} does not exist (give a prefix like "
                          "model.ckpt-1000 or a training directory)")


@dataclass
class RestoreReport:
    source: str
    restored: List[Tuple[str, str]] = field(default_factory=list)  # (model var, source name)
    excluded: List[str] = field(default_factory=list)  # model vars left out by exclude scopes
    missing: List[str] = field(default_factory=list)  # model vars the source does not have
    shape_mismatch: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    unused: List[str] = field(default_factory=list)  # source names no model var took

    def lines(self):
        """Human-readable report, one fact per line."""
        out = [f"restored {len(self.restored)} variables from {self.source}"]
        out += [f"  excluded (left at initialiser): {n}" for n in self.excluded]
        out += [f"  not in source (left at initialiser): {n}" for n in self.missing]
        out += [f"  shape mismatch (left at initialiser): {n} model {m} source {c}"
                for n, m, c in self.shape_mismatch]
        if self.unused:
            out.append(f"  {len(self.unused)} source tensors unused, e.g. "
                       f"{', '.join(self.unused[:3])}")
        return out

    def as_dict(self):
        return {"source": self.source, "restored": [m for m, _ in self.restored],
                "excluded": self.excluded, "missing": self.missing,
                "shape_mismatch": [[n, list(m), list(c)] for n, m, c in self.shape_mismatch],
                "unused": self.unused}


@dataclass
class Source:
    """Named arrays to start from: their shapes up front, values read on demand."""

    name: str
    shapes: Dict[str, tuple]
    read: Callable[[str], np.ndarray]
    partial: bool = False  # a pretrained start covers part of a network by design


def read_tensor(reader, name, prefix):
    """`reader.get_tensor(name)`, a corrupt or truncated file as a `CheckpointError`."""
    try:
        return reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError) as e:  # IndexError: truncated .data
        first = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"cannot read {name} from {prefix}: {first}") from None


def load_arrays(path, allow_pickle=False):
    """``{name: array}`` from an .npz, or from a pickled dict .npy with `allow_pickle`.

    A pickle can run any code while it loads, so it is read only when asked for.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, "rb") as f:
        magic = f.read(6)
    # without a NumPy or zip header np.load would try to unpickle the bytes
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK\x03\x04"):
        raise CheckpointError(f"{path}: not a NumPy file (.npz or .npy)")
    try:
        data = np.load(path, allow_pickle=allow_pickle)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise CheckpointError(
                f"{path} holds a pickle, which can run code when loaded; re-export it as .npz "
                "(rankiqa export-npy) or pass --allow-pickle if you trust it") from None
        raise CheckpointError(f"{path}: not a NumPy file ({e})") from None
    except (OSError, EOFError) as e:
        raise CheckpointError(f"{path}: not a NumPy file ({e})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            return {k: data[k] for k in data.files}
    if data.dtype != object or data.shape != ():
        raise CheckpointError(f"{path} is a single array, not a saved dict of arrays")
    return dict(data.item())


def open_source(source, net_name=None, allow_pickle=False):
    """The `Source` behind a source string (see the module docstring); None for scratch."""
    if source in (None, "", SCRATCH):
        return None
    if os.path.isfile(source) and not source.endswith(".index"):  # checkpoints are prefixes
        arrays = load_arrays(source, allow_pickle)
        return Source(source, {k: a.shape for k, a in arrays.items()}, arrays.__getitem__)
    if os.path.isdir(source) or tf.io.gfile.exists(source + ".index"):
        prefix = resolve_checkpoint(source)
        try:
            reader = tf.train.load_checkpoint(prefix)
            shapes = {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items()}
        except (tf.errors.OpError, ValueError) as e:
            raise CheckpointError(f"cannot read checkpoint {prefix}: {e}") from None
        return Source(prefix, shapes, lambda name: read_tensor(reader, name, prefix))
    if source in pretrained.PRETRAINED:
        arrays = pretrained.get_pretrained_arrays(source, net_name)
        return Source(source, {k: a.shape for k, a in arrays.items()}, arrays.__getitem__,
                      partial=True)
    raise InputError(f"weights {source!r}: not {SCRATCH!r}, not a checkpoint, training folder or "
                     f".npz file, and not a pretrained start (choose from "
                     f"{sorted(pretrained.PRETRAINED)})")


def match(source, variables, exclude_scopes=(), name_map=()):
    """Pairs model variables with source names.

    Args:
      source: a `Source`.
      variables: the model variables to fill.
      exclude_scopes: scopes left out (`slim.get_variables_to_restore(exclude=...)`).
      name_map: ``[(model_prefix, source_prefix)]``: a variable whose name starts with
        ``model_prefix`` is looked up with that prefix replaced (``resnet_v2/`` ->
        ``resnet_v2_50/`` for an official checkpoint).

    Returns:
      (``[(variable, source name)]``, `RestoreReport`).
    """
    exclude_scopes = tuple(s.strip().rstrip("/") for s in exclude_scopes if s.strip())
    report = RestoreReport(source.name)
    pairs, claimed = [], set()  # claimed: names some variable asked for, fitting or not
    for var in variables:
        name = var.op.name
        if exclude_scopes and in_scopes(name, exclude_scopes):
            report.excluded.append(name)
            continue
        source_name = name
        for model_prefix, source_prefix in name_map:
            if name.startswith(model_prefix):
                source_name = source_prefix + name[len(model_prefix):]
                break
        if source_name not in source.shapes:
            report.missing.append(name)
            continue
        claimed.add(source_name)
        model_shape = tuple(var.shape.as_list())
        if tuple(source.shapes[source_name]) != model_shape:
            report.shape_mismatch.append((name, model_shape, tuple(source.shapes[source_name])))
            continue
        pairs.append((var, source_name))
        report.restored.append((name, source_name))
    report.unused = sorted(n for n in source.shapes if n not in claimed and is_model_variable(n))
    return pairs, report


def check_fit(report, allow_missing, hint, no_match_hint=None):
    """Raises `CheckpointError` when no variable found its name in the source, or when variables
    are missing or of another shape and `allow_missing` is False; the hints say what to
    change."""
    if not report.restored and not report.shape_mismatch:
        raise CheckpointError(
            f"{report.source} matches no model variable (model has e.g. {report.missing[:2]}, "
            f"the source e.g. {report.unused[:2]}); {no_match_hint or hint}")
    if (report.missing or report.shape_mismatch) and not allow_missing:
        problems = report.missing + [n for n, _, _ in report.shape_mismatch]
        raise CheckpointError(
            f"{report.source} does not fit the model: {len(report.missing)} variables missing, "
            f"{len(report.shape_mismatch)} of another shape (e.g. {problems[:3]}); {hint}")


def assign(values, session):
    """Sets each variable of ``[(variable, value)]`` now, in one session run: a plain variable,
    or every local copy of one mirrored over replicas (`rankiqa.train.distribute`), which would
    otherwise start apart. One run per variable (``Variable.load``) cost ~30 ms each: 10 s of
    the 17.5 s it took to load the built-in EfficientNet-Lite2's 325 variables."""
    initializers, feed = [], {}
    for variable, value in values:
        for component in getattr(variable, "values", None) or (variable,):
            initializers.append(component.initializer)
            feed[component.initializer.inputs[1]] = value  # what Variable.load feeds
    if initializers:
        session.run(initializers, feed)


def build_init(source, variables=None, exclude_scopes=(), source_scope=None, scope=None,
               official_scope=None, net_name=None, allow_missing=False, allow_pickle=False):
    """``init_fn(session)`` loading `source` into `variables`, and its `RestoreReport`.

    Args:
      source: a source string (module docstring); ``scratch`` gives (None, None).
      variables: default: the model variables of the default graph.
      exclude_scopes: scopes left at their initialisers (stage two: the head).
      source_scope: the scope the source's names live under when it differs from `scope`
        (``resnet_v2_50`` for an official slim checkpoint).
      scope: the network's scope.
      official_scope: the scope official slim checkpoints of this network use; taken as
        `source_scope` when that is None and the source has names under it but none under
        `scope`.
      net_name: the network, for pretrained starts that fit only some.
      allow_missing: accept model variables the source lacks (pretrained starts always do).

    Raises:
      CheckpointError: the source does not fit (see `check_fit`).
    """
    opened = open_source(source, net_name, allow_pickle)
    if opened is None:
        return None, None
    variables = slim.get_model_variables() if variables is None else variables
    if source_scope is None and scope and official_scope and official_scope != scope:
        def under(s):
            return any(n.startswith(s + "/") for n in opened.shapes)
        if under(official_scope) and not under(scope):
            source_scope = official_scope
    name_map = [(scope + "/", source_scope + "/")] if source_scope and scope else []
    pairs, report = match(opened, variables, exclude_scopes, name_map)
    if opened.partial and report.unused:
        raise CheckpointError(f"{source}: {len(report.unused)} weights found no variable "
                              f"(e.g. {report.unused[:3]})")
    check_fit(report, allow_missing or opened.partial,
              "set init.ignore_missing to start those from their initialisers",
              "init.source_scope maps a source whose names live under another scope")

    def init_fn(session):
        assign([(var, opened.read(source_name)) for var, source_name in pairs], session)

    return init_fn, report


def load_into(session, source, variables=None, net_name=None, allow_pickle=False):
    """Loads `source` (a source string or ``{name: array}``) into the graph now; returns the
    `RestoreReport` without judging it (callers decide what must fit)."""
    if isinstance(source, dict):
        arrays = source
        opened = Source("arrays", {k: np.shape(a) for k, a in arrays.items()}, arrays.__getitem__)
    else:
        opened = open_source(source, net_name, allow_pickle)
    variables = tf.global_variables() if variables is None else variables
    pairs, report = match(opened, variables)
    assign([(var, opened.read(source_name)) for var, source_name in pairs], session)
    return report


def checkpoint_arrays(checkpoint, include=(), exclude=(), model_only=True):
    """(prefix, ``{variable name: array}``) from a checkpoint, filtered by scopes."""
    prefix = resolve_checkpoint(checkpoint)
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = sorted(reader.get_variable_to_shape_map())
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {prefix}: {e}") from None
    arrays = {}
    for name in names:
        if model_only and not is_model_variable(name):
            continue
        if include and not in_scopes(name, include):
            continue
        if exclude and in_scopes(name, exclude):
            continue
        arrays[name] = read_tensor(reader, name, prefix)
    if not arrays:
        raise CheckpointError(f"{prefix}: no variable left after --include "
                              f"{list(include)} / --exclude {list(exclude)}")
    return prefix, arrays
