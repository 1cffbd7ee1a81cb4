"""Where and how every graph here runs: the device (`get_device`), the precision
(`resolve_precision`) and every tf.Session's ConfigProto (`session_config`).

The choices are plain constants, so the CLI offers them without loading TensorFlow; each
function imports it when called.
"""

import os

from rankiqa.errors import InputError

DEVICES = ("auto", "cpu", "gpu")
PRECISIONS = ("fp32", "mixed", "auto")
# how a training step is placed (`rankiqa.train.distribute.get_placement`)
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
# what runs a scoring graph (`rankiqa.serve.scoring.load_scorer`): auto picks the faster of
# TensorFlow and float ONNX Runtime for the model on this machine where their scores agree
# (`rankiqa.serve.engines.choose_engine`); onnx-int8 only when asked (`rankiqa.serve.quantize`)
ENGINES = ("auto", "tensorflow", "onnx", "onnx-int8")


def get_device(device):
    """`auto` | `cpu` | `gpu` -> a TF device string (None: TF's default placement)."""
    from rankiqa.compat import tf

    if device == "auto":
        return None
    if device == "cpu":
        return "/device:CPU:0"
    if device == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            raise InputError("--device gpu: TensorFlow sees no GPU here (use --device auto or cpu)")
        return "/device:GPU:0"
    raise InputError(f"unknown --device {device!r}; choose from {list(DEVICES)}")


def cpu_has_bf16():
    """Whether this CPU computes bfloat16 natively (AVX512_BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _gpus_have_fp16_cores():
    from rankiqa.compat import tf

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
    return "mixed" if (_gpus_have_fp16_cores() if gpu else cpu_has_bf16()) else "fp32"


def session_config(precision="fp32", cpu_devices=0):
    """The ConfigProto every session here runs with.

    Args:
      precision: fp32, or mixed: TensorFlow's grappler rewrites the graph to compute in 16 bits
        where that is safe, variables staying float32 (float16 on GPUs, bfloat16 through oneDNN
        on CPUs).
      cpu_devices: split the CPU into this many devices (mirrored tests without GPUs).
    """
    from rankiqa.compat import tf

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
