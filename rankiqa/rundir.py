"""What a run folder holds, and how it is written.

A training folder (``--train-dir``) keeps ``rankiqa.json`` (the network, its evaluation views
and the whole config: what every tool needs to rebuild the scoring graph), ``eval.json`` (the
latest held-out or validation result with its history), ``model.ckpt-STEP`` checkpoints and
TensorBoard events. JSON is written aside and renamed into place, so a reader never sees half a
file. The device and session settings that every graph here runs with live here too.
"""

import contextlib
import json
import os
import re
import shutil
import socket
import time

from rankiqa.compat import tf
from rankiqa.config import to_dict
from rankiqa.errors import InputError

RUN_INFO_NAME = "rankiqa.json"  # what a tool needs to rebuild the graph from a train dir
EVAL_NAME = "eval.json"
CHECKPOINT_NAME = "model.ckpt"
DEVICES = ("auto", "cpu", "gpu")


def get_device(device):
    """`auto` | `cpu` | `gpu` -> a TF device string (None: TF's default placement)."""
    if device == "auto":
        return None
    if device == "cpu":
        return "/device:CPU:0"
    if device == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            raise InputError("--device gpu: TensorFlow sees no GPU here (use --device auto or cpu)")
        return "/device:GPU:0"
    raise InputError(f"unknown --device {device!r}; choose from {list(DEVICES)}")


PRECISIONS = ("fp32", "mixed", "auto")


def _cpu_has_bf16():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _gpus_have_fp16_cores():
    details = [tf.config.experimental.get_device_details(g)
               for g in tf.config.list_physical_devices("GPU")]
    return bool(details) and all(d.get("compute_capability", (0, 0)) >= (7, 0) for d in details)


def resolve_precision(precision, gpu=False):
    """`fp32` | `mixed` | `auto` -> fp32 or mixed. `auto` is mixed where the hardware computes
    in 16 bits natively (GPUs of compute capability 7.0 or newer; CPUs with AVX512_BF16 or
    AMX), fp32 elsewhere: emulated bfloat16 costs more than it saves."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose from {list(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "mixed" if (_gpus_have_fp16_cores() if gpu else _cpu_has_bf16()) else "fp32"


def session_config(precision="fp32", cpu_devices=0):
    """The ConfigProto every session here runs with.

    Args:
      precision: fp32, or mixed: TensorFlow's grappler rewrites the graph to compute in 16 bits
        where that is safe, variables staying float32 (float16 on GPUs, bfloat16 through oneDNN
        on CPUs).
      cpu_devices: split the CPU into this many devices (mirrored tests without GPUs).
    """
    config = tf.ConfigProto(allow_soft_placement=True,
                            gpu_options=tf.GPUOptions(allow_growth=True))
    if cpu_devices > 1:
        config.device_count["CPU"] = cpu_devices
    # TensorFlow applies these variables to in-process sessions only; a multi-worker server's
    # sessions take their thread counts from the config
    for variable, field in (("TF_NUM_INTRAOP_THREADS", "intra_op_parallelism_threads"),
                            ("TF_NUM_INTEROP_THREADS", "inter_op_parallelism_threads")):
        if os.environ.get(variable, "").isdigit():
            setattr(config, field, int(os.environ[variable]))
    if precision == "mixed":
        from tensorflow.core.protobuf import rewriter_config_pb2

        on = rewriter_config_pb2.RewriterConfig.ON
        rewrites = config.graph_options.rewrite_options
        if tf.config.list_physical_devices("GPU"):
            rewrites.auto_mixed_precision = on
        else:
            rewrites.auto_mixed_precision_onednn_bfloat16 = on
    return config


def fault_point(name):
    """For the fault-injection tests only: with ``RANKIQA_FAULT=name`` in the environment the
    process writes the file ``RANKIQA_FAULT_MARKER`` names and waits here to be killed, so a
    test can kill it at this exact moment of a write."""
    if os.environ.get("RANKIQA_FAULT") == name:
        with open(os.environ["RANKIQA_FAULT_MARKER"], "w") as f:
            f.write(name)
        while True:
            time.sleep(1)


def write_atomic(path, data):
    """Writes `data` (bytes) so a reader never sees half a file: aside, then renamed. On an
    error the aside file is removed and the error raised."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        fault_point(f"before-rename:{os.path.basename(path)}")
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path, data):
    """Writes JSON so a reader never sees half a file (`write_atomic`)."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True).encode())


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_run_info(train_dir, stage, config, net, crop_size, views, **extra):
    """Writes ``rankiqa.json``: the stage, network, training crop, evaluation views
    (`rankiqa.data.views.Views`: what scoring uses by default) and the config as plain data."""
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


def _inside(path, folder):
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


def check_output(out, inputs=(), force=False, option="the output"):
    """Refuses, before any work: an existing `out` without `force`, an `out` that is, holds
    or lies inside one of `inputs` (replacing it would delete what is being read), and an `out`
    whose folder cannot be written. What an interrupted write left is tidied first
    (`recover_siblings`)."""
    recover_siblings(out)
    for source in inputs:
        if source and os.path.exists(source) and (_inside(out, source) or _inside(source, out)):
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
                except (OSError, ValueError):
                    holder = {}
                if holder.get("host") == me["host"] and not _alive(int(holder.get("pid", 0))):
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


# --------------------------------------------------------------------------- checkpoints

_CHECKPOINT = re.compile(r"^" + re.escape(CHECKPOINT_NAME) + r"-(\d+)\.index$")
# what an interrupted write leaves: TF's tempstate shards and our own atomic-write siblings
_TEMPORARY = re.compile(r"(_temp$|tempstate|\.tmp-\d+$|\.partial-)")


def checkpoints_on_disk(folder):
    """``[(step, prefix)]`` of the ``model.ckpt-STEP`` checkpoints in `folder`, newest first,
    found by listing the folder (the ``checkpoint`` index may be missing or name another
    folder's files)."""
    found = []
    for name in os.listdir(folder):
        match = _CHECKPOINT.match(name)
        if match:
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


def write_checkpoint_index(folder, prefixes):
    """Rewrites the ``checkpoint`` index with names relative to `folder` (newest last), so the
    folder can be copied or moved and still restores its own weights."""
    names = [os.path.basename(p) for p in prefixes]
    tf.train.update_checkpoint_state(folder, names[-1], names)


def remove_temporaries(folder, log=None):
    """Deletes what interrupted writes left in `folder` (call while holding its lock)."""
    for name in sorted(os.listdir(folder)):
        if _TEMPORARY.search(name) and not name.startswith(LOCK_NAME):
            path = os.path.join(folder, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            if log:
                log(f"removed {path}, left by an interrupted run")
