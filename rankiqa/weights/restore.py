"""Starting weights: one loader for every source, one report, one list of non-model variables.

A *source* is one of:

- ``scratch``: no weights, every variable keeps its initialiser;
- a training directory or checkpoint prefix (a stage-one run, an official slim ImageNet
  checkpoint: `source_scope` maps our scope onto theirs);
- an ``.npz`` (or pickled-dict ``.npy``) file from ``rankiqa export-npy``;
- a named pretrained start that a package ships (`rankiqa.weights.pretrained.PRETRAINED`).

`build_init` matches a graph's variables to the source by name (minus excluded scopes) and
returns ``init_fn(session)`` and a `RestoreReport`: what was restored, excluded, missing, of
another shape, and what the source holds that no variable took. The order in which a run starts
is stated once, in `rankiqa.train.loop.run_loop`: resume from the run's own checkpoint, else this
init, else the initialisers.
"""

import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

import numpy as np

from rankiqa.run import rundir
from rankiqa.weights import builtin, pretrained
from rankiqa.compat import slim, tf
from rankiqa.errors import InputError

SCRATCH = "scratch"
WRITTEN_NAME = "model.ckpt"  # the prefix `write_checkpoint` writes (merge-ckpt, calibrate)
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


# --------------------------------------------------------------------------- checkpoints

_CHECKPOINT = re.compile(r"^" + re.escape(rundir.CHECKPOINT_NAME) + r"-(\d+)\.index$")


def checkpoints_on_disk(folder):
    """``[(step, prefix)]`` of the ``model.ckpt-STEP`` checkpoints in `folder`, newest first,
    found by listing the folder (the ``checkpoint`` index may be missing or name another
    folder's files)."""
    found = []
    for name in os.listdir(folder):
        match = _CHECKPOINT.match(name)
        # a FIFO or device named like an index is no checkpoint (reading it would block)
        if match and os.path.isfile(os.path.join(folder, name)):
            found.append((int(match.group(1)), os.path.join(folder, name[:-len(".index")])))
    return sorted(found, reverse=True)


def checkpoint_problem(prefix):
    """None when every tensor of checkpoint `prefix` reads back, else what went wrong."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, OSError, IndexError) as e:  # IndexError: truncated
        return str(e).splitlines()[0][:200]
    return None


def latest_checkpoint(folder, verify=False, log=None):
    """The newest checkpoint prefix in `folder` (None when it holds none), by listing it.

    With `verify`, every tensor is read back and an unreadable checkpoint (truncated, cut by a
    kill) is passed over for the one before, with a warning through `log`.

    Raises:
      InputError: the folder holds checkpoints but none can be read.
    """
    found = checkpoints_on_disk(folder) if os.path.isdir(folder) else []
    for step, prefix in found:
        problem = checkpoint_problem(prefix) if verify else None
        if problem is None:
            return prefix
        if log:
            log(f"warning: {prefix} cannot be read ({problem}); using the one before")
    if found:
        raise InputError(f"{folder} holds {len(found)} checkpoints but none can be read; move "
                         "them away to start over")
    return None


def write_checkpoint(arrays, output, files=None):
    """``output/model.ckpt`` holding `arrays` (``{name: array}``) under their exact names, and
    `files` (``{name: bytes}``) beside it, written aside and moved into place together."""
    with rundir.writing(output) as tmp, tf.Graph().as_default():
        variables = [tf.Variable(value, name=name, dtype=tf.as_dtype(value.dtype))
                     for name, value in arrays.items()]
        # names must survive exactly: tf.Variable uniquifies on collision, so check
        renamed = [v.op.name for v in variables if v.op.name not in arrays]
        if renamed:
            raise CheckpointError(f"names not representable in a graph: {renamed[:5]}")
        saver = tf.train.Saver(var_list={v.op.name: v for v in variables})
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            saver.save(sess, os.path.join(tmp, WRITTEN_NAME), write_meta_graph=False)
        # the state file would name the temporary folder; a relative name survives the move
        # (given a relative folder, TF would write names relative to the working directory)
        tf.train.update_checkpoint_state(os.path.abspath(tmp), WRITTEN_NAME, [WRITTEN_NAME])
        for name, data in (files or {}).items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)


def write_checkpoint_index(folder, prefixes):
    """Rewrites the ``checkpoint`` index with names relative to `folder` (newest last), so the
    folder can be copied or moved and still restores its own weights."""
    names = [os.path.basename(p) for p in prefixes]
    # an absolute folder: given a relative one, TF takes the names as relative to the working
    # directory and writes them relative to the folder ("../../model.ckpt-0"), which
    # tf.train.latest_checkpoint then cannot find
    tf.train.update_checkpoint_state(os.path.abspath(folder), names[-1], names)


def check_regular_files(prefix):
    """Refuses a checkpoint whose ``.index`` or data files are not regular files: TensorFlow
    would block forever reading a FIFO, or read a device without end."""
    folder = os.path.dirname(os.path.abspath(prefix))
    base = os.path.basename(prefix)
    names = [base + ".index"] + ([n for n in os.listdir(folder)
                                  if n.startswith(base + ".data-")] if os.path.isdir(folder) else [])
    for name in names:
        path = os.path.join(folder, name)
        if os.path.lexists(path) and not os.path.isfile(path):
            raise CheckpointError(f"checkpoint {prefix}: {path} is not a regular file (a folder, "
                                  "a FIFO or a device); not a checkpoint")


def resolve_checkpoint(path):
    """A checkpoint prefix from a prefix or a training directory: the best validated
    checkpoint it kept (``best/``, `rundir.BEST_NAME`), else its latest."""
    if path is None:
        raise CheckpointError("no checkpoint given")
    if os.path.isdir(path):
        # a run that kept its best validated checkpoint is that checkpoint (train.keep_best)
        best = os.path.join(path, rundir.BEST_NAME)
        if os.path.isdir(best) and latest_checkpoint(best) is not None:
            return latest_checkpoint(best)
        # by listing the folder: its index may name another folder's files (a copied run)
        latest = latest_checkpoint(path)
        if latest is None:
            indexed = tf.train.latest_checkpoint(path)  # e.g. merge-ckpt's model.ckpt
            if indexed and os.path.dirname(os.path.abspath(indexed)) == os.path.abspath(path):
                latest = indexed
        if latest is None:
            raise CheckpointError(f"{path} is a folder with no checkpoint in it")
        return latest
    if tf.io.gfile.exists(path + ".index") or tf.io.gfile.exists(path):
        check_regular_files(path)
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
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                return {k: _npz_member(path, data, k) for k in data.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise CheckpointError(
                f"{path} holds a pickle, which can run code when loaded; re-export it as .npz "
                "(rankiqa export-npy) or pass --allow-pickle if you trust it") from None
        raise CheckpointError(f"{path}: not a NumPy file ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise CheckpointError(f"{path}: a damaged or incomplete NumPy file ({e}); export "
                              "it again") from None
    if data.dtype != object or data.shape != ():
        raise CheckpointError(f"{path} is a single array, not a saved dict of arrays")
    return dict(data.item())


def _npz_member(path, data, key):
    """One array of an open .npz, its header checked first: a member that claims more bytes
    than it holds (a damaged header would make NumPy allocate them) or is not an array is a
    `CheckpointError` naming it."""
    info = data.zip.getinfo(key + ".npy") if key + ".npy" in data.zip.namelist() else None
    if info is None:
        raise CheckpointError(f"{path}: member {key!r} is not a NumPy array")
    with data.zip.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
    claimed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if claimed > info.file_size:
        raise CheckpointError(f"{path}: member {key!r} claims {list(shape)} {dtype} "
                              f"({claimed:,} bytes) in {info.file_size:,}: the file is damaged")
    return data[key]


def arrays_source(name, arrays, partial=False):
    """A `Source` over ``{name: array}`` held in memory."""
    return Source(name, {k: np.shape(a) for k, a in arrays.items()}, arrays.__getitem__, partial)


def checkpoint_source(path):
    """A `Source` over the checkpoint a prefix or training folder names (`resolve_checkpoint`);
    tensors are read when asked for."""
    prefix = resolve_checkpoint(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items()}
    except (tf.errors.OpError, ValueError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"cannot read checkpoint {prefix}: {first}") from None
    return Source(prefix, shapes, lambda name: read_tensor(reader, name, prefix))


def open_model(ref=None, net=None, allow_pickle=False):
    """The one opener of a model reference, for scoring, exports and starts alike: what
    `rankiqa.weights.builtin.resolve` says `ref` is, with its weights ready to read.

    Args:
      ref, net: as `rankiqa.weights.builtin.resolve`'s (a pretrained start needs `net`).
      allow_pickle: let an ``.npy`` be a pickled dict (a pickle can run code).

    Returns:
      (`Source`, info): info as `rankiqa.weights.builtin.resolve` gives it.

    Raises:
      InputError: `ref` names no model; CheckpointError: it cannot be read.
    """
    kind, info = builtin.resolve(ref, net)
    ref = info["ref"]
    if kind == "builtin":
        return arrays_source(ref, builtin.get(ref).arrays()), info
    if kind == "arrays":
        return arrays_source(ref, load_arrays(ref, allow_pickle)), info
    if kind == "checkpoint":
        return checkpoint_source(ref), info
    if info["net"] is None:
        raise InputError(f"pretrained start {ref} needs the network's name (--net: "
                         f"{'/'.join(pretrained.PRETRAINED[ref][0])})")
    return arrays_source(ref, pretrained.get_pretrained_arrays(ref, info["net"]),
                         partial=True), info


def open_source(source, net_name=None, allow_pickle=False):
    """The `Source` a training start names (`open_model`'s references); None for scratch."""
    if source in (None, "", SCRATCH):
        return None
    try:
        builtin.resolve(source)
    except InputError:
        raise InputError(f"weights {source!r}: not {SCRATCH!r}, a checkpoint, training folder "
                         f"or .npz file, a built-in model ({sorted(builtin.BUILTIN)}) or a "
                         f"pretrained start (choose from {sorted(pretrained.PRETRAINED)})") from None
    return open_model(source, net_name, allow_pickle)[0]


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
    """Loads `source` (a `Source`, a source string or ``{name: array}``) into the graph now;
    returns the `RestoreReport` without judging it (callers decide what must fit)."""
    if isinstance(source, dict):
        opened = arrays_source("arrays", source)
    elif isinstance(source, Source):
        opened = source
    else:
        opened = open_source(source, net_name, allow_pickle)
    variables = tf.global_variables() if variables is None else variables
    pairs, report = match(opened, variables)
    assign([(var, opened.read(source_name)) for var, source_name in pairs], session)
    return report


def model_arrays(ref, include=(), exclude=(), model_only=True, net=None):
    """(`Source` name, ``{variable name: array}``) of any model `open_model` resolves, filtered
    by scopes; optimizer slots and the global step left out with `model_only`."""
    source, _ = open_model(ref, net)
    arrays = {name: source.read(name) for name in sorted(source.shapes)
              if (not model_only or is_model_variable(name))
              and (not include or in_scopes(name, include))
              and not (exclude and in_scopes(name, exclude))}
    if not arrays:
        raise CheckpointError(f"{source.name}: no variable left after --include "
                              f"{list(include)} / --exclude {list(exclude)}")
    return source.name, arrays
