"""What a run folder holds, and how it is written.

A training folder (``--train-dir``) keeps ``rankiqa.json`` (the network, its evaluation views
and the whole config: what every tool needs to rebuild the scoring graph), ``eval.json`` (the
latest held-out or validation result with its history), ``model.ckpt-STEP`` checkpoints and
TensorBoard events. Every file a command writes goes aside and is renamed into place
(`write_atomic`), so a reader never sees half a file; every output is checked before any work
(`check_output`). Pure Python: the data tools import it without loading TensorFlow.
"""

import contextlib
import errno
import json
import math
import os
import re
import shutil
import socket
import time

from rankiqa.config import to_dict
from rankiqa.errors import InputError, RankiqaError

RUN_INFO_NAME = "rankiqa.json"  # what a tool needs to rebuild the graph from a train dir
BEST_NAME = "best"  # the folder of a run's best validated checkpoint (train.keep_best)
EVAL_NAME = "eval.json"
CHECKPOINT_NAME = "model.ckpt"


def fault_point(name):
    """For the fault-injection tests only: with ``RANKIQA_FAULT=name`` in the environment the
    process writes the file ``RANKIQA_FAULT_MARKER`` names and waits here to be killed, so a
    test can kill it at this exact moment of a write."""
    if os.environ.get("RANKIQA_FAULT") == name:
        with open(os.environ["RANKIQA_FAULT_MARKER"], "w") as f:
            f.write(name)
        while True:
            time.sleep(1)


_NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class OutOfSpace(RankiqaError, OSError):
    """A write ran out of room; the message names the file."""


@contextlib.contextmanager
def writing(out):
    """The one write-aside-then-rename: yields a sibling path (``OUT.partial-PID``) to write a
    file or folder to; when the block ends without an error it replaces `out` (`replace_path`:
    an interruption leaves the old output or the new one whole), else it is removed and the
    error raised. `np.save`-style writers that append an extension are followed."""
    out = out.rstrip(os.sep) or out
    tmp = f"{out}.partial-{os.getpid()}"
    candidates = (tmp, tmp + ".npy", tmp + ".npz")
    _remove(*candidates)  # what this pid left before (a reused pid): never our output
    try:
        try:
            yield tmp
        except OSError as e:
            if e.errno in _NO_ROOM:  # the writer's own error often names no file
                raise OutOfSpace(f"cannot write {out}: {e.strerror} (the disk is full or a "
                                 "file-size limit was reached); the old one, if any, is "
                                 "untouched") from None
            raise
        written = next((c for c in candidates if os.path.lexists(c)), None)
        if written is None:
            raise FileNotFoundError(f"nothing was written for {out}")
        fault_point(f"before-rename:{os.path.basename(out)}")
        if os.path.isdir(written) or os.path.isdir(out):
            replace_path(written, out)
        else:
            os.replace(written, out)  # atomic for a file, even over an old one
    finally:
        _remove(*candidates)


def _remove(*paths):
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)


def write_atomic(path, data):
    """Writes `data` (bytes, or str as UTF-8) so a reader never sees half a file (`writing`)."""
    with writing(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def write_json_atomic(path, data):
    """Writes JSON so a reader never sees half a file (`write_atomic`)."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True).encode())


def finite_or_null(data):
    """`data` with every NaN or infinite float replaced by None: JSON has no NaN, and a strict
    reader refuses the bare ``NaN`` Python writes (an undefined correlation is null)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_or_null(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_null(v) for v in data]
    return data


def cache_dir(*parts):
    """``$XDG_CACHE_HOME/rankiqa/...`` (default ``~/.cache``): what this machine keeps between
    commands (the onnx engine's conversions, the image checks)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rankiqa", *parts)


def read_json(path):
    """The JSON object in `path`; a damaged file (cut short, not JSON, not an object) is an
    `InputError` naming it, never a parser's traceback."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise InputError(f"{path} is damaged ({str(e).splitlines()[0][:120]}): restore it "
                         "from a copy, or move it away") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is damaged (a JSON {type(data).__name__}, not an object): "
                         "restore it from a copy, or move it away")
    return data


def write_run_info(train_dir, stage, config, net, crop_size, views, **extra):
    """Writes ``rankiqa.json``: the stage, network, training crop, evaluation views
    (`rankiqa.preprocessing.views.Views`: what scoring uses by default) and the config as plain data."""
    info = {"stage": stage, "net": net, "crop_size": crop_size, "views": views.as_dict(),
            "config": to_dict(config), **extra}
    write_json_atomic(os.path.join(train_dir, RUN_INFO_NAME), info)
    return info


def read_run_info(train_dir):
    """The run description a training directory keeps beside its checkpoints."""
    path = os.path.join(train_dir, RUN_INFO_NAME)
    if not os.path.isfile(path):
        raise InputError(f"{train_dir} has no {RUN_INFO_NAME}: not a rankiqa training "
                         "directory (pass --net to name the network)")
    return read_json(path)


def find_run_info(model):
    """``rankiqa.json`` of the run a folder or checkpoint prefix belongs to; {} when none."""
    folder = model if os.path.isdir(model) else os.path.dirname(model)
    if os.path.isfile(os.path.join(folder, RUN_INFO_NAME)):
        return read_run_info(folder)
    return {}


def inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_writable(path):
    """Makes `path`'s folder and proves a file can be written there, before any work (so a
    read-only or missing location fails in a second, not after an hour)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    probe = os.path.join(folder, f".rankiqa-write-test-{os.getpid()}")
    with open(probe, "w"):
        pass
    os.remove(probe)


def recover_siblings(out):
    """Tidies what an interrupted write of `out` left beside it, by dead processes only: a
    half-written ``OUT.partial-PID`` is deleted; an old output set aside (``OUT.partial-old-PID``)
    is put back when `out` is missing (the new one never arrived), else deleted."""
    folder, base = os.path.split(os.path.abspath(out).rstrip(os.sep))
    if not os.path.isdir(folder):
        return
    for name in sorted(os.listdir(folder)):
        match = re.fullmatch(re.escape(base) + r"\.partial-(old-)?(\d+)", name)
        if not match or _alive(int(match.group(2))):
            continue
        path = os.path.join(folder, name)
        if match.group(1) and not os.path.lexists(out):
            os.rename(path, out)
        elif os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def input_path(source):
    """What an input occupies on disk: a checkpoint prefix (``RUN/model.ckpt-20``) or one of its
    ``.index`` / ``.data-*`` files stands for its folder, which replacing would delete."""
    if not source:
        return source
    source = os.fspath(source)
    if not os.path.exists(source) and os.path.exists(source + ".index"):
        return os.path.dirname(os.path.abspath(source))
    if re.search(r"\.(index|data-\d+-of-\d+)$", source) and os.path.isfile(source):
        return os.path.dirname(os.path.abspath(source))
    return source


def check_output(out, inputs=(), force=False, option="the output"):
    """Refuses, before any work: an existing `out` without `force`, an `out` that is, holds
    or lies inside one of `inputs` (replacing it would delete what is being read), and an `out`
    whose folder cannot be written. What an interrupted write left is tidied first
    (`recover_siblings`)."""
    recover_siblings(out)
    for source in map(input_path, inputs):
        if source and os.path.exists(source) and (inside(out, source) or inside(source, out)):
            raise InputError(f"{option} {out} is, holds or lies inside the input {source}; "
                             "choose another output")
    if os.path.exists(out) and not force:
        raise FileExistsError(f"{out} already exists; pass --force to replace it")
    check_writable(out)


def replace_path(tmp, out):
    """Moves the finished `tmp` to `out`. An existing `out` is renamed aside first and deleted
    last, so an interruption leaves the old output or the new one whole, never half of one."""
    aside = None
    if os.path.lexists(out):
        aside = f"{out.rstrip(os.sep)}.partial-old-{os.getpid()}"
        os.rename(out, aside)
    os.rename(tmp, out)
    if aside is not None:
        if os.path.isdir(aside) and not os.path.islink(aside):
            shutil.rmtree(aside)
        else:
            os.remove(aside)


# --------------------------------------------------------------------------- locks


LOCK_NAME = ".lock"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def locked(folder, command, log=None):
    """Holds `folder` for one process: a second command on it is refused with the holder's
    pid, host and start time. A lock left by a dead process on this host is taken over (with a
    notice through `log`); one from another host must be removed by hand, as the message says.
    """
    created = not os.path.exists(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(me, f)
    try:
        for _ in range(3):
            try:
                os.link(tmp, path)  # atomic: the lock appears with its content, or not at all
                break
            except FileExistsError:
                try:
                    holder = read_json(path)
                except FileNotFoundError:
                    continue  # its holder just let go: try again
                except (OSError, ValueError):
                    holder = {}
                pid = holder.get("pid") if isinstance(holder, dict) else None
                if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
                    raise InputError(f"{path} is not a lock this program wrote (pid {pid!r}); "
                                     "if no command uses the folder, delete it") from None
                if holder.get("host") == me["host"] and not _alive(pid):
                    if log:
                        log(f"notice: taking over the lock of process {holder.get('pid')}, "
                            f"which is gone ({path})")
                    os.remove(path)
                    continue
                raise InputError(
                    f"{folder} is in use by {holder.get('command', 'another rankiqa command')} "
                    f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')} since "
                    f"{holder.get('since', '?')}); wait for it to end, or, if that process is "
                    f"gone, delete {path}") from None
        else:
            raise InputError(f"could not lock {folder}; delete {path} if no command uses it")
    finally:
        os.remove(tmp)
    try:
        yield
    finally:
        try:
            if read_json(path).get("pid") == me["pid"]:
                os.remove(path)
            if created and not os.listdir(folder):
                os.rmdir(folder)  # a start that failed leaves no empty run folder
        except (OSError, ValueError):
            pass


# What an interrupted write of a run leaves, by exact name: TF's sharded-save folder
# (``model.ckpt-STEP_temp``, holding only ``part-*`` files), a bundle writer's ``.tempstate``
# files, TF's ``checkpoint.tmp<32 hex>`` index and this program's own ``NAME.partial-PID`` (a
# dead process's only). A user's file that merely begins like one (``checkpoints_temp/``,
# ``eval.json.partial-backup``) matches none of them and is never touched.
_SHARD = r"model\.ckpt-\d+\.(?:index|data-\d+-of-\d+)"
_LEFTOVER = re.compile(
    rf"(?P<tf_folder>model\.ckpt-\d+_temp)"
    rf"|{_SHARD}\.tempstate\d+"
    r"|checkpoint\.tmp[0-9a-f]{32}"
    rf"|(?:{_SHARD}|checkpoint|{re.escape(RUN_INFO_NAME)}|{re.escape(EVAL_NAME)}"
    r"|restore_report\.json|probe\.json)\.partial-(?P<pid>\d+)")
_PART = re.compile(r"part-\d+-of-\d+\.(?:index|data-\d+-of-\d+)(?:\.tempstate\d+)?")


def _leftover(folder, name):
    """Whether `name` in `folder` is what an interrupted write of a run left (`_LEFTOVER`)."""
    match = _LEFTOVER.fullmatch(name)
    if not match:
        return False
    path = os.path.join(folder, name)
    if match.group("tf_folder"):
        return (os.path.isdir(path) and not os.path.islink(path)
                and all(_PART.fullmatch(n) for n in os.listdir(path)))
    if match.group("pid"):
        return not os.path.isdir(path) and not _alive(int(match.group("pid")))
    return os.path.isfile(path) and not os.path.islink(path)


def remove_temporaries(folder, log=None):
    """Deletes what interrupted writes of a run left in `folder` and its `BEST_NAME` folder,
    recognised by exact name and content (`_LEFTOVER`; call while holding the folder's lock)."""
    best = os.path.join(folder, BEST_NAME)
    if os.path.isdir(best) and not os.path.islink(best):
        remove_temporaries(best, log)
    for name in sorted(os.listdir(folder)):
        if _leftover(folder, name):
            path = os.path.join(folder, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            if log:
                log(f"removed {path}, left by an interrupted run")
