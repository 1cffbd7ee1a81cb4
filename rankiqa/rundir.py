"""What a run folder holds, and how it is written.

A training folder (``--train-dir``) keeps ``rankiqa.json`` (the network, its evaluation views
and the whole config: what every tool needs to rebuild the scoring graph), ``eval.json`` (the
latest held-out or validation result with its history), ``model.ckpt-STEP`` checkpoints and
TensorBoard events. JSON is written aside and renamed into place, so a reader never sees half a
file. The device and session settings that every graph here runs with live here too.
"""

import json
import os

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


def session_config():
    return tf.ConfigProto(allow_soft_placement=True,
                          gpu_options=tf.GPUOptions(allow_growth=True))


def write_json_atomic(path, data):
    """Writes JSON so a reader never sees half a file (write aside, then rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


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


def check_output(out, inputs=(), force=False, option="the output"):
    """Refuses, before any work: an existing `out` without `force`, and an `out` that is, holds
    or lies inside one of `inputs` (replacing it would delete what is being read)."""
    for source in inputs:
        if source and os.path.exists(source) and (_inside(out, source) or _inside(source, out)):
            raise InputError(f"{option} {out} is, holds or lies inside the input {source}; "
                             "choose another output")
    if os.path.exists(out) and not force:
        raise FileExistsError(f"{out} already exists; pass --force to replace it")


def replace_path(tmp, out):
    """Moves the finished `tmp` to `out`. An existing `out` is renamed aside first and deleted
    last, so an interruption leaves the old output or the new one whole, never half of one."""
    import shutil

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
