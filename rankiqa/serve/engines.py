"""What runs a scoring graph besides TensorFlow's session: ONNX Runtime on the graph converted by
tf2onnx, the verified cache of conversions, and `--engine auto`'s choice between the two.

A converted model is kept once per machine (`onnx_cache_path`: named by the digest of the
frozen graph and the converter) and used only when its bytes are the ones this user wrote
(`_read_verified`). `choose_engine` measures both engines on the model's own views, once per
model and machine, and takes ONNX Runtime only where it is faster and agrees with TensorFlow.
Everything here takes a TensorFlow `rankiqa.serve.scoring.Scorer` (its session, graph and
named tensors) and never imports that module: scoring builds on engines, not the reverse.
"""

import hashlib
import math
import os

import numpy as np

from rankiqa.compat import tf
from rankiqa.errors import InputError
from rankiqa.run import device as device_lib
from rankiqa.run import rundir

# what runs the scoring graph: TensorFlow's session, ONNX Runtime on the graph converted by
# tf2onnx, or auto: the faster of the two for this model on this machine where they agree
# (`choose_engine`). Which is faster depends on the CPU (BENCHMARKS P10, EfficientNet-Lite2:
# ONNX Runtime 2.4-2.6x TensorFlow's photos/s without AVX-512, 1.26x with it).
ENGINES = device_lib.ENGINES
# auto takes ONNX Runtime only where its scores stay this close to TensorFlow's (relative to
# the scores' spread, plus this much absolute): float32 kernels round differently
AUTO_TOLERANCE = 1e-5
# --engine auto's measurement (`_measure_engines`): each engine's best of interleaved rounds (a
# competing load only ever slows a round, so the fastest is the least disturbed), more rounds
# while the two are within MARGIN of each other, and a verdict kept only when each engine's
# TRUST_BEST best rounds agree within STEADY (else the machine was too busy to tell: measured
# again at the next load). Three, not two: under a load that slows half the runs at random, two
# slowed rounds alike enough kept the slower engine in 1-2 % of verdicts, three in 0-0.1 %
# (`tests/test_tools.py`, the synthetic competing load)
MEASURE_ROUNDS, MOST_ROUNDS, MARGIN, STEADY, TRUST_BEST = 3, 9, 0.15, 0.10, 3
RECORD_METHOD = 3  # records of another method are measured again
ONNX_INSTALL = "pip install 'rankiqa[onnx]' (tf2onnx>=1.17 and onnxruntime)"
# where the onnx engine keeps converted models; "off" converts at every load
ONNX_CACHE_ENV = "RANKIQA_ONNX_CACHE"
OPSET = 13


class OnnxRunner:
    """A TensorFlow scorer's graph frozen, converted (`onnx_model`) and run by ONNX Runtime on
    the CPU. A model is converted once per machine: the conversion is kept in a cache
    (`onnx_cache_path`), and ``cached`` names the file (None with the cache off or not
    writable; ``note`` then says so). Scores only: pooled features stay with TensorFlow.

    Args:
      scorer: a TensorFlow `rankiqa.serve.scoring.Scorer` owning its session.
      frozen: its frozen graph, where the caller has one (`frozen_graph_def`).
      variant: what runs instead of the float conversion, built from it once and cached beside
        it: ``variant.build(float_bytes, input_name)`` -> bytes, ``variant.tag(float_bytes)``
        naming the recipe (`rankiqa.serve.quantize.Int8`).
    """

    def __init__(self, scorer, opset=OPSET, frozen=None, variant=None):
        onnxruntime = require_onnx("onnxruntime")
        self.input_name, self.output_name = scorer.images.name, scorer.score.name
        self.note = None
        frozen = frozen_graph_def(scorer) if frozen is None else frozen
        path = onnx_cache_path(frozen, scorer, opset)
        model = _read_verified(path) if path else None
        self.cached = path if model is not None else None
        if model is None:
            model = onnx_model(scorer, opset, frozen).SerializeToString()
            self.cached = _write_cache(path, model) if path else None
        if variant is not None:  # e.g. int8 (`rankiqa.serve.quantize.Int8`), kept beside it
            model, path = self._variant(variant, model, path)
        self.session = _ort_session(onnxruntime, model)
        if path and self.cached is None:
            self.note = (f"converted in memory: the ONNX cache {os.path.dirname(path)} cannot "
                         "be written")

    def _variant(self, variant, model, path):
        """(`variant` of the float `model`, from the cache or built and kept, its cache
        path)."""
        path = path and f"{path[:-len('.onnx')]}.{variant.tag(model)}.onnx"
        built = _read_verified(path) if path else None
        self.cached = path if built is not None else None
        if built is None:
            built = variant.build(model, self.input_name)
            self.cached = _write_cache(path, built) if path else None
        return built, path

    def run(self, crops, batch_size):
        """Scores ``[N]`` of ``crops: [N, H, W, 3]``, `batch_size` crops per run."""
        if len(crops) == 0:
            return np.zeros((0,), np.float32)
        return np.concatenate([
            self.session.run([self.output_name], {
                self.input_name: np.asarray(crops[i:i + batch_size], np.float32)})[0]
            for i in range(0, len(crops), batch_size)])

    def close(self):
        self.session = None


def require_onnx(*modules):
    """The first of `modules` (tf2onnx, onnxruntime), each imported, or one clear error."""
    import importlib

    try:
        return [importlib.import_module(m) for m in modules][0]
    except ImportError as e:
        raise InputError(f"ONNX needs {e.name}: {ONNX_INSTALL}") from None


def frozen_graph_def(scorer):
    """`scorer`'s graph with its variables folded into constants (for .pb and ONNX)."""
    return tf.graph_util.convert_variables_to_constants(
        scorer.session, scorer.graph.as_graph_def(), [scorer.score.op.name])


def onnx_model(scorer, opset=OPSET, frozen=None):
    """`scorer`'s frozen graph (`frozen`, else frozen now) as an ONNX ModelProto (tf2onnx); the
    input and output keep their names. ONNX Runtime's float32 kernels round differently from
    TensorFlow's (absolute differences near 2e-4 on resnet_v2_50): compare with a relative
    tolerance."""
    tf2onnx = require_onnx("tf2onnx")
    proto, _ = tf2onnx.convert.from_graph_def(
        frozen_graph_def(scorer) if frozen is None else frozen,
        input_names=[scorer.images.name], output_names=[scorer.score.name], opset=opset)
    return proto


def onnx_cache_path(frozen, scorer, opset=OPSET):
    """Where the onnx engine keeps `frozen` converted, or None with the cache off: a file named
    by the digest of the frozen graph (weights included) and of the converter's version and
    opset, so a changed model or converter can never be served an old conversion. The folder is
    ``$RANKIQA_ONNX_CACHE`` (``off``: no cache), else ``$XDG_CACHE_HOME/rankiqa/onnx`` or
    ``~/.cache/rankiqa/onnx``. Converting costs about as much as loading the model (P10).
    A cached file is used only when its bytes are the ones this user wrote there
    (`_read_verified`): a shared cache cannot swap the model."""
    folder = os.environ.get(ONNX_CACHE_ENV)
    if folder == "off":
        return None
    folder = folder or rundir.cache_dir("onnx")
    tf2onnx = require_onnx("tf2onnx")
    digest = hashlib.sha256(frozen.SerializeToString(deterministic=True))
    digest.update(f"|tf2onnx {tf2onnx.__version__}|opset {opset}|{scorer.images.name}|"
                  f"{scorer.score.name}".encode())
    return os.path.join(folder, f"{digest.hexdigest()}.onnx")


def _ort_session(onnxruntime, model):
    return onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])


def _verified_record(path):
    """Where this user keeps the SHA-256 of a conversion they wrote to the cache at `path`:
    under their own cache folder, never beside the (possibly shared) ONNX cache, so a file
    planted in that cache cannot bring its own record."""
    return rundir.cache_dir("onnx-verified", os.path.basename(path) + ".sha256")


def _read_verified(path):
    """The cached conversion's bytes when their SHA-256 is the one this user recorded on
    writing it; None when it is missing, changed, damaged or someone else's (convert again)."""
    try:
        with open(path, "rb") as f:
            model = f.read()
        with open(_verified_record(path)) as f:
            recorded = f.read().strip()
    except OSError:
        return None
    return model if hashlib.sha256(model).hexdigest() == recorded else None


def _write_cache(path, model):
    """Keeps a converted model (`rundir.write_atomic`) and the digest it is checked against
    when read (`_read_verified`); returns `path`, or None when the folder cannot be written
    (the next load converts again)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        rundir.write_atomic(path, model)
        record = _verified_record(path)
        os.makedirs(os.path.dirname(record), exist_ok=True)
        rundir.write_atomic(record, hashlib.sha256(model).hexdigest())
        return path
    except OSError:
        return None


def choose_engine(scorer, device="auto", precision="fp32"):
    """(engine, a note saying why, the frozen graph or None) for `--engine auto`: ONNX Runtime
    where it is installed, computes what TensorFlow does (scores within `AUTO_TOLERANCE`) and
    scores this model's views faster on this machine; else TensorFlow. Measured once per model, machine and version (a
    few seconds: the conversion and a few batches each) and kept beside the onnx engine's
    conversions (`onnx_cache_path`, ``.engine.json``)."""
    if device == "gpu" or precision == "mixed":
        return "tensorflow", "auto: tensorflow (the onnx engine computes float32 on the CPU)", None
    try:
        require_onnx("tf2onnx", "onnxruntime")
    except InputError:
        return "tensorflow", "auto: tensorflow (the onnx extra is not installed)", None
    frozen = frozen_graph_def(scorer)
    path = onnx_cache_path(frozen, scorer)
    record_path = path and path[:-len(".onnx")] + ".engine.json"
    record = record_path and _read_record(record_path, scorer.batch_size)
    busy = ""
    if not record:
        tell_measuring(path)
        record = _measure_engines(scorer, frozen)
        if record_path and record["trusted"]:
            try:
                rundir.write_json_atomic(record_path, record)
            except OSError:
                pass  # measured again next time
        elif not record["trusted"]:
            busy = "; not kept: the machine was too busy to tell, measured again next time"
    speedup = record["onnx_views_s"] / record["tensorflow_views_s"]
    if not record["agree"]:
        return "tensorflow", (f"auto: tensorflow (onnx scores differ by up to "
                              f"{record['max_difference']:.2g})"), frozen
    engine = "onnx" if speedup > 1 else "tensorflow"
    return engine, (f"auto: {engine} (onnx runs {speedup:.2f}x tensorflow's views/s here"
                    f"{busy})"), frozen


def folder_size(folder):
    """Bytes under `folder` (0 when it does not exist)."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def tell_measuring(path):
    """One line on stderr before the silent seconds of the first use of a model on a machine
    (converting it and timing both engines), with where the result is kept and its cost."""
    import sys

    folder = os.path.dirname(path) if path else rundir.cache_dir("onnx")
    sys.stderr.write(
        "first use of this model here: converting it to ONNX and timing both engines, once "
        f"(up to a minute); kept in {folder} ({folder_size(folder) / 1e6:.0f} MB now, about "
        "the model's size per model; delete the folder to clear it, or choose --engine "
        "tensorflow to skip this)\n")
    sys.stderr.flush()


def _read_record(path, batch_size):
    try:
        record = rundir.read_json(path)
    except (OSError, ValueError):
        return None
    def number(key, low):
        value = record.get(key)
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value) and value > low)

    # a record of another shape (a cache shared with others, an older version) is measured
    # again, like garbage that is not JSON
    well_formed = (record.get("method") == RECORD_METHOD
                   and number("onnx_views_s", 0) and number("tensorflow_views_s", 0)
                   and isinstance(record.get("agree"), bool)
                   and (record["agree"] or number("max_difference", -1)))
    if well_formed and record.get("machine") == _machine() and record.get(
            "batch_size") == batch_size:
        return record
    return None


def _machine():
    """What decides which engine is faster: the CPU's model and flags, the cores, the
    runtimes' versions."""
    import platform

    import onnxruntime

    try:
        with open("/proc/cpuinfo") as f:
            cpu = sorted({line.strip() for line in f if line.startswith(("model name", "flags"))})
    except OSError:
        cpu = [platform.processor()]
    digest = hashlib.sha256("\n".join(cpu).encode()).hexdigest()[:16]
    return f"{digest}|{os.cpu_count()} cpus|tf {tf.__version__}|ort {onnxruntime.__version__}"


def _measure_engines(scorer, frozen):
    """Views/s of both engines on one batch of random views of the model's size (`decide`'s
    rounds), and whether their scores agree."""
    import time

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (scorer.batch_size, scorer.views.crop, scorer.views.crop, 3))
    crops = crops.astype(np.float32)
    onnx = OnnxRunner(scorer, frozen=frozen)
    runners = {"tensorflow": scorer.score_batch,
               "onnx": lambda batch: onnx.run(batch, scorer.batch_size)}
    scores = {name: run(crops) for name, run in runners.items()}  # warm up

    def one_round(order):
        took = {}
        for name in order:
            start = time.perf_counter()
            runners[name](crops)
            took[name] = time.perf_counter() - start
        return took

    try:
        record = decide(one_round, len(crops))
    finally:
        onnx.close()
    difference = float(np.abs(scores["onnx"] - scores["tensorflow"]).max())
    spread = float(np.ptp(scores["tensorflow"])) or 1.0
    return {"machine": _machine(), "batch_size": scorer.batch_size, "method": RECORD_METHOD,
            **record, "max_difference": difference,
            "agree": difference <= AUTO_TOLERANCE * (1 + spread)}


def decide(one_round, views):
    """Which engine is faster, from interleaved rounds that a busy machine cannot turn: each
    engine's best round (a competing load only slows a round); at least `MEASURE_ROUNDS`, more
    (up to `MOST_ROUNDS`) while the two are within `MARGIN`; trusted when each engine's
    `TRUST_BEST` best rounds agree within `STEADY`. `one_round(order)` times one run of each engine in
    `order`, alternated so that drift hits both alike.

    Returns:
      {"tensorflow_views_s", "onnx_views_s", "rounds", "trusted"}.
    """
    times = {"tensorflow": [], "onnx": []}
    for k in range(MOST_ROUNDS):
        order = ("tensorflow", "onnx") if k % 2 == 0 else ("onnx", "tensorflow")
        for name, seconds in one_round(order).items():
            times[name].append(seconds)
        if k + 1 >= MEASURE_ROUNDS:
            best = {name: min(t) for name, t in times.items()}
            steady = all(sorted(t)[TRUST_BEST - 1] <= sorted(t)[0] * (1 + STEADY)
                         for t in times.values())
            clear = max(best.values()) > min(best.values()) * (1 + MARGIN)
            if steady and clear:
                break
    return {"tensorflow_views_s": views / best["tensorflow"], "onnx_views_s": views / best["onnx"],
            "rounds": k + 1, "trusted": bool(steady)}
