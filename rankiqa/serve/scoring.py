"""From pixels to scores: the scoring graph and the one `Scorer` every path goes through.

The graph takes float32 RGB images in the uint8 range, ``rankiqa/images`` ``[None, H, W, 3]``,
applies the network's own preprocessing inside, and returns ``rankiqa/score`` ``[None]`` on the
model's scale (`rankiqa.serve.scales`: its labels' range and direction, or normalised), so that no
caller ever normalises pixels or maps scores itself.

A `Scorer` either owns its graph and session (`load_scorer`: ``evaluate``, ``predict``, the
exports) or is a branch of a training graph that reuses its variables (`Scorer.in_graph`:
validation, the probe, stage one's held-out ranking accuracy), fed the session of the
training loop. Every image any command scores goes through `Scorer.iter_scores`: decoding and
view placement in threads, overlapped with the network, a bounded number of batches ahead.
"""

import collections
import concurrent.futures
import hashlib
import os

import numpy as np

from rankiqa.run import device as device_lib
from rankiqa import nets
from rankiqa.run import rundir
from rankiqa.serve import scales
from rankiqa.weights import restore
from rankiqa.compat import tf
from rankiqa.data import views as views_lib
from rankiqa.data.views import BadImageError
from rankiqa.errors import InputError, RankiqaError

INPUT_NAME = "rankiqa/images"
OUTPUT_NAME = "rankiqa/score"
AGGREGATES = views_lib.AGGREGATES
# what runs the scoring graph: TensorFlow's session, ONNX Runtime on the graph converted by
# tf2onnx, or auto: the faster of the two for this model on this machine where they agree
# (`choose_engine`). Which is faster depends on the CPU (BENCHMARKS P10, EfficientNet-Lite2:
# ONNX Runtime 2.4-2.6x TensorFlow's photos/s without AVX-512, 1.26x with it).
ENGINES = device_lib.ENGINES
# auto takes ONNX Runtime only where its scores stay this close to TensorFlow's (relative to
# the scores' spread, plus this much absolute): float32 kernels round differently
AUTO_TOLERANCE = 1e-5
ONNX_INSTALL = "pip install 'rankiqa[onnx]' (tf2onnx>=1.17 and onnxruntime)"
# where the onnx engine keeps converted models; "off" converts at every load
ONNX_CACHE_ENV = "RANKIQA_ONNX_CACHE"
# threads that decode images and place views while the network runs (Pillow and NumPy release
# the GIL); batches decoded ahead of the network: memory stays bounded by
# (DECODE_THREADS * 2 + 1) batches of views, never a whole folder
DECODE_THREADS = min(4, os.cpu_count() or 1)


def build_scoring_graph(net_name, pooled_blocks=(), scale=None):
    """Input placeholder (uint8-range floats) -> preprocessing -> network -> named score, on
    `scale` (a `rankiqa.serve.scales.Scale`; None: the network's normalised output).

    Returns:
      (images ``[None, H, W, 3]``, score ``[None]``, pooled features ``[None, d]`` or None
      where the network exposes none).
    """
    network_fn = nets.get_network_fn(net_name, pooled_blocks=pooled_blocks)
    images = tf.placeholder(tf.float32, [None, None, None, 3], name=INPUT_NAME)
    score, end_points = network_fn(network_fn.preprocess(images), is_training=False)
    if scale is not None:  # one multiply-add, none for a normalised scale
        score = scale.from_normalised(score)
    score = tf.identity(score, name=OUTPUT_NAME)
    return images, score, _pooled_features(end_points, images)


def _pooled_features(end_points, images):
    features = end_points.get("features")
    return None if features is None else tf.reshape(features, [tf.shape(images)[0], -1])


class Scorer:
    """Scores crops through a graph: `images` in, `score` (and pooled `features`) out.

    Args:
      images: float32 placeholder ``[None, H, W, 3]``, uint8-range RGB.
      score: ``[None]`` scores.
      views: the model's own evaluation `Views` (the default of every scoring call).
      features: pooled features ``[None, d]`` or None.
      session: the session to run in (None: pass one to each call).
      net_name: the network's name, for reports.
      batch_size: crops per session run.
    """

    def __init__(self, images, score, views, features=None, session=None, net_name=None,
                 batch_size=64):
        self.images, self.score, self.features = images, score, features
        self.views, self.session, self.net_name = views, session, net_name
        self.batch_size = batch_size
        self.graph = score.graph
        self.report = None
        self.precision = "fp32"  # fp32 | mixed: how its session computes (`load_scorer`)
        self.scale = scales.of_model({})  # what the scores mean (`load_scorer`: rankiqa.json)
        self.info = {}  # the model's run description (`rankiqa.weights.restore.open_model`)
        self.engine_note = None  # why `--engine auto` chose this engine

    @classmethod
    def in_graph(cls, network_fn, views):
        """A scoring branch of the current (training) graph: inference mode, the training
        variables reused. Pass the training loop's session to each call."""
        images = tf.placeholder(tf.float32, [None, None, None, 3])
        score, end_points = network_fn(network_fn.preprocess(images), is_training=False,
                                       reuse=True)
        return cls(images, score, views, features=_pooled_features(end_points, images),
                   net_name=network_fn.name)

    def run(self, tensor, crops, session=None):
        """`tensor` for ``crops: [N, H, W, 3]``, `batch_size` crops per run."""
        session = session or self.session
        if len(crops) == 0:
            return np.zeros((0,) + tuple(tensor.shape.as_list()[1:]), np.float32)
        return np.concatenate([session.run(tensor, {self.images: crops[i:i + self.batch_size]})
                               for i in range(0, len(crops), self.batch_size)])

    def score_batch(self, crops, session=None):
        """``crops: [N, H, W, 3]`` uint8 -> scores ``[N]``."""
        return self.run(self.score, crops, session)

    def iter_scores(self, items, views=None, tensor="score", session=None, progress=None):
        """Each item's per-view values, in input order: the one loop that scores images.

        Items are decoded and their views placed in `DECODE_THREADS` threads while the network
        runs on the batch before; a batch holds ``batch_size // views.count`` items. Random
        views are drawn from `rankiqa.data.views.VIEW_SEED`, as in every command.

        Args:
          items: paths, PIL images or uint8 arrays (`rankiqa.data.views.as_image`).
          views: `rankiqa.data.views.Views`; default: the scorer's own.
          tensor: ``score`` (values ``[views.count]``) or ``features`` (``[views.count, d]``).
          session: default: the scorer's own.
          progress: optional ``progress(done, total)``, after each batch.

        Yields:
          ``(k, values)``, or ``(k, error)`` with the `BadImageError` of an item that cannot
          be read: reported, never stopping the others.
        """
        views = views or self.views
        items = list(items)
        fetch = {"score": self.score, "features": self.features}.get(tensor)
        if fetch is None:
            raise InputError(f"this scorer has no tensor {tensor!r}")
        per_batch = max(1, self.batch_size // views.count)
        starts = range(0, len(items), per_batch)

        def place(start):  # in a decoding thread: the batch arrives ready to run (uint8: a
            # float32 copy made here measured no faster, and would hold 4x the memory ahead)
            placed = []
            for k in range(start, min(start + per_batch, len(items))):
                try:
                    image = views_lib.as_image(items[k], k)
                except BadImageError as e:
                    placed.append(e)
                    continue
                try:
                    placed.append(views.apply(image))
                except BadImageError as e:  # its views cannot be placed: named as its path is
                    name = items[k] if isinstance(items[k], (str, os.PathLike)) else f"image {k}"
                    placed.append(BadImageError(f"{os.fspath(name)}: {e}"))
            good = [p for p in placed if not isinstance(p, BadImageError)]
            return start, placed, np.concatenate(good) if good else None

        if progress:
            progress(0, len(items))  # the clock starts with the work, not with the model
        with concurrent.futures.ThreadPoolExecutor(DECODE_THREADS) as pool:
            ahead = collections.deque(pool.submit(place, start)
                                      for start in starts[:DECODE_THREADS * 2])
            queued = len(ahead)
            while ahead:
                start, placed, batch = ahead.popleft().result()
                if queued < len(starts):
                    ahead.append(pool.submit(place, starts[queued]))
                    queued += 1
                values = None if batch is None else self.run(fetch, batch, session)
                if values is not None:
                    values = values.reshape(-1, views.count, *values.shape[1:])
                    if fetch is self.score and not np.isfinite(values).all():
                        bad = values[~np.isfinite(values)][0]
                        if self.session is None:  # a training graph's branch: it diverged
                            raise RankiqaError(
                                f"validation scores became {bad}: the weights diverged; "
                                "lower optim.lr or set optim.clip_gradient_norm")
                        raise RankiqaError(
                            f"the model {self.info.get('ref') or self.net_name} gives "
                            f"non-finite scores ({bad}): its weights hold NaN or infinite "
                            "values; score with another model")
                used = 0
                for k, p in enumerate(placed, start=start):
                    if isinstance(p, BadImageError):
                        yield k, p
                    else:
                        yield k, values[used]
                        used += 1
                if progress:
                    progress(start + len(placed), len(items))

    def values(self, items, views=None, tensor="score", session=None, progress=None):
        """`iter_scores` gathered: ``[len(items), views.count]`` scores, or
        ``[len(items), views.count, d]`` features; an unreadable item raises its
        `BadImageError` (callers that skip them iterate themselves)."""
        out = []
        for _, values in self.iter_scores(items, views, tensor, session, progress):
            if isinstance(values, BadImageError):
                raise values
            out.append(values)
        return np.stack(out) if out else np.zeros((0, (views or self.views).count), np.float32)

    def score_items(self, items, views=None, session=None, aggregate="mean"):
        """One score per item (``[len(items)]`` float32): its views' scores combined by mean
        or median (`values`)."""
        if aggregate not in AGGREGATES:
            raise InputError(f"unknown aggregate {aggregate!r}; choose from {list(AGGREGATES)}")
        per_view = self.values(items, views, session=session)
        return per_view.mean(axis=1) if aggregate == "mean" else np.median(per_view, axis=1)

    def close(self):
        if self.session is not None:
            self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class OnnxScorer(Scorer):
    """A `Scorer` whose crops run in ONNX Runtime (CPU), from a TensorFlow `Scorer`'s graph
    frozen and converted (`onnx_model`; the caller then closes the TensorFlow one). A model is
    converted once per machine: the conversion is kept in a cache (`onnx_cache_path`), and
    ``cached`` names the file (None with the cache off or not writable). Scores only: pooled
    features and other tensors stay with TensorFlow."""

    def __init__(self, scorer, opset=13, frozen=None):
        onnxruntime = require_onnx("onnxruntime")
        super().__init__(scorer.images, scorer.score, scorer.views, net_name=scorer.net_name,
                         batch_size=scorer.batch_size)
        self.report, self.precision, self.scale = scorer.report, scorer.precision, scorer.scale
        self.info, self.engine_note = scorer.info, scorer.engine_note
        frozen = frozen_graph_def(scorer) if frozen is None else frozen
        path = onnx_cache_path(frozen, scorer, opset)
        model = _read_verified(path) if path else None
        if model is not None:
            self.ort_session, self.cached = _ort_session(onnxruntime, model), path
            return
        model = onnx_model(scorer, opset, frozen).SerializeToString()
        self.ort_session = _ort_session(onnxruntime, model)
        self.cached = _write_cache(path, model) if path else None
        if path and self.cached is None:
            note = f"converted in memory: the ONNX cache {os.path.dirname(path)} cannot be written"
            self.engine_note = f"{self.engine_note}; {note}" if self.engine_note else note

    def run(self, tensor, crops, session=None):
        if tensor is not self.score:
            raise InputError("the onnx engine computes scores only; use the tensorflow engine")
        if len(crops) == 0:
            return np.zeros((0,), np.float32)
        return np.concatenate([
            self.ort_session.run([self.score.name], {
                self.images.name: np.asarray(crops[i:i + self.batch_size], np.float32)})[0]
            for i in range(0, len(crops), self.batch_size)])

    def close(self):
        self.ort_session = None


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


def onnx_model(scorer, opset=13, frozen=None):
    """`scorer`'s frozen graph (`frozen`, else frozen now) as an ONNX ModelProto (tf2onnx); the
    input and output keep their names. ONNX Runtime's float32 kernels round differently from
    TensorFlow's (absolute differences near 2e-4 on resnet_v2_50): compare with a relative
    tolerance."""
    tf2onnx = require_onnx("tf2onnx")
    proto, _ = tf2onnx.convert.from_graph_def(
        frozen_graph_def(scorer) if frozen is None else frozen,
        input_names=[scorer.images.name], output_names=[scorer.score.name], opset=opset)
    return proto


def onnx_cache_path(frozen, scorer, opset):
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


def model_views(info, net_name, crop_size=None):
    """The `Views` a model was validated with (its ``rankiqa.json``), else one centre crop at
    the network's default size; `crop_size` overrides the side."""
    default = info.get("crop_size") or nets.get_network_fn(net_name).default_image_size
    return views_lib.from_dict(info.get("views") or {}, default).replace(crop=crop_size)


def load_scorer(model=None, net=None, crop_size=None, device="auto", allow_pickle=False,
                batch_size=64, precision="fp32", engine="tensorflow", pooled_blocks=None,
                normalised=False):
    """A `Scorer` owning its graph and session, restored once.

    Args:
      model: any reference `rankiqa.weights.restore.open_model` resolves (a built-in model's name,
        None for the default one; a training folder or checkpoint prefix; an export-npy
        ``.npz``; a pretrained start).
      net: network name when the model records none (required with an ``.npz``).
      crop_size: view side; default: the model's (rankiqa.json) or the network's default.
      precision: fp32 | mixed | auto (`rankiqa.run.device.resolve_precision`): mixed computes in
        16 bits, the weights staying float32.
      engine: tensorflow | onnx (`OnnxScorer`: ONNX Runtime on the CPU, float32; converting
        the graph costs seconds once, each batch then runs faster).
      pooled_blocks: the blocks a pooled head reads; default: the run's own, else the
        network's.
      normalised: scores in [0, 1], higher better, as the model trained on them; default: on
        its labels' own scale (`rankiqa.serve.scales.of_model`).

    Raises:
      CheckpointError: the weights do not fit the network.
      InputError: no network name can be found.
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose from {list(ENGINES)}")
    if engine == "onnx":
        if device == "gpu" or precision == "mixed":
            raise InputError("the onnx engine computes in float32 on the CPU; use --engine "
                             "tensorflow for --device gpu or --precision mixed")
        require_onnx("tf2onnx", "onnxruntime")  # before seconds of loading, not after
    source, info = restore.open_model(model, net, allow_pickle)
    net_name = info["net"]
    if net_name is None:
        what = ("an .npz model needs --net" if os.path.isfile(info["ref"]) else
                f"{info['ref']}: no {rundir.RUN_INFO_NAME} beside it; pass --net")
        raise InputError(f"{what} (the network name, one of {sorted(nets.networks_map)})")
    views = model_views(info, net_name, crop_size)
    if pooled_blocks is None:  # a run's own pooled blocks (net.pooled_blocks), else the default
        pooled_blocks = (info.get("config") or {}).get("net", {}).get("pooled_blocks") or ()
    graph = tf.Graph()
    with graph.as_default(), tf.device(device_lib.get_device(device)):
        scale = scales.of_model(info, normalised)
        images, score, features = build_scoring_graph(net_name, tuple(pooled_blocks), scale)
        variables = tf.global_variables()
        init_op = tf.variables_initializer(variables)
    precision = device_lib.resolve_precision(
        precision, gpu=device != "cpu" and bool(tf.config.list_physical_devices("GPU")))
    session = tf.Session(graph=graph, config=device_lib.session_config(precision))
    try:
        with graph.as_default():
            session.run(init_op)
            report = restore.load_into(session, source, variables)
        restore.check_fit(report, allow_missing=source.partial,  # a pretrained start: no head
                          hint=f"it does not fit {net_name}; name the right one with --net")
    except BaseException:
        session.close()
        raise
    scorer = Scorer(images, score, views, features=features, session=session,
                    net_name=net_name, batch_size=batch_size)
    scorer.report, scorer.precision, scorer.scale = report, precision, scale
    scorer.info = info
    frozen = None  # auto's frozen graph, which the onnx engine then reuses
    if engine == "auto":
        engine, scorer.engine_note, frozen = choose_engine(scorer, device, precision)
    if engine == "onnx":
        with scorer:  # its graph is converted; its session is no longer needed
            return OnnxScorer(scorer, frozen=frozen)
    return scorer


def choose_engine(scorer, device="auto", precision="fp32"):
    """(engine, a note saying why, the frozen graph or None) for `--engine auto`: ONNX Runtime where it is installed,
    computes what TensorFlow does (scores within `AUTO_TOLERANCE`) and scores this model's views
    faster on this machine; else TensorFlow. Measured once per model, machine and version (a
    few seconds: the conversion and a few batches each) and kept beside the onnx engine's
    conversions (`onnx_cache_path`, ``.engine.json``)."""
    if device == "gpu" or precision == "mixed":
        return "tensorflow", "auto: tensorflow (the onnx engine computes float32 on the CPU)", None
    try:
        require_onnx("tf2onnx", "onnxruntime")
    except InputError:
        return "tensorflow", "auto: tensorflow (the onnx extra is not installed)", None
    frozen = frozen_graph_def(scorer)
    path = onnx_cache_path(frozen, scorer, 13)
    record_path = path and path[:-len(".onnx")] + ".engine.json"
    record = record_path and _read_record(record_path, scorer.batch_size)
    if not record:
        record = _measure_engines(scorer, frozen)
        if record_path:
            try:
                rundir.write_json_atomic(record_path, record)
            except OSError:
                pass  # measured again next time
    speedup = record["onnx_views_s"] / record["tensorflow_views_s"]
    if not record["agree"]:
        return "tensorflow", (f"auto: tensorflow (onnx scores differ by up to "
                              f"{record['max_difference']:.2g})"), frozen
    engine = "onnx" if speedup > 1 else "tensorflow"
    return engine, f"auto: {engine} (onnx runs {speedup:.2f}x tensorflow's views/s here)", frozen


def _read_record(path, batch_size):
    try:
        record = rundir.read_json(path)
    except (OSError, ValueError):
        return None
    machine = _machine()
    return record if record.get("machine") == machine and record.get(
        "batch_size") == batch_size else None


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


def _measure_engines(scorer, frozen, rounds=3):
    """Views/s of both engines on one batch of random views of the model's size, taken in
    turns; and whether their scores agree."""
    import time

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (scorer.batch_size, scorer.views.crop, scorer.views.crop, 3))
    crops = crops.astype(np.float32)
    onnx = OnnxScorer(scorer, frozen=frozen)
    runners = {"tensorflow": scorer, "onnx": onnx}
    scores = {name: runner.score_batch(crops) for name, runner in runners.items()}  # warm up
    seconds = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.score_batch(crops)
            seconds[name].append(time.perf_counter() - start)
    onnx.close()
    difference = float(np.abs(scores["onnx"] - scores["tensorflow"]).max())
    spread = float(np.ptp(scores["tensorflow"])) or 1.0
    return {"machine": _machine(), "batch_size": scorer.batch_size,
            "tensorflow_views_s": len(crops) / float(np.median(seconds["tensorflow"])),
            "onnx_views_s": len(crops) / float(np.median(seconds["onnx"])),
            "max_difference": difference,
            "agree": difference <= AUTO_TOLERANCE * (1 + spread)}
