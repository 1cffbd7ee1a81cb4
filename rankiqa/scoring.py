"""From pixels to scores: the scoring graph and the one `Scorer` every path goes through.

The graph takes float32 RGB images in the uint8 range, ``rankiqa/images`` ``[None, H, W, 3]``,
applies the network's own preprocessing inside, and returns ``rankiqa/score`` ``[None]``
(higher is better), so that no caller ever normalises pixels itself.

A `Scorer` either owns its graph and session (`load_scorer`: ``evaluate``, ``predict``, the
exports) or is a branch of a training graph that reuses its variables (`Scorer.in_graph`:
validation, the probe, stage one's held-out ranking accuracy), fed the session of the
training loop. Both crop with `rankiqa.data.views.Views` and run one batching loop.
"""

import hashlib
import os

import numpy as np

from rankiqa import models, nets, rundir, weights
from rankiqa.compat import tf
from rankiqa.data.views import Views
from rankiqa.errors import InputError

INPUT_NAME = "rankiqa/images"
OUTPUT_NAME = "rankiqa/score"
AGGREGATES = ("mean", "median")
# what runs the scoring graph: TensorFlow's session, or ONNX Runtime on the graph converted by
# tf2onnx (BENCHMARKS P10, EfficientNet-Lite2: 2.4-2.6x TensorFlow's photos/s on a CPU
# without AVX-512, 1.26x on one with it)
ENGINES = ("tensorflow", "onnx")
ONNX_INSTALL = "pip install 'rankiqa[onnx]' (tf2onnx>=1.17 and onnxruntime)"
# where the onnx engine keeps converted models; "off" converts at every load
ONNX_CACHE_ENV = "RANKIQA_ONNX_CACHE"


def build_scoring_graph(net_name, pooled_blocks=()):
    """Input placeholder (uint8-range floats) -> preprocessing -> network -> named score."""
    network_fn = nets.get_network_fn(net_name, pooled_blocks=pooled_blocks)
    images = tf.placeholder(tf.float32, [None, None, None, 3], name=INPUT_NAME)
    score, _ = network_fn(network_fn.preprocess(images), is_training=False)
    score = tf.identity(score, name=OUTPUT_NAME)
    return images, score, network_fn


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
        self.scale = score_scale({})  # what the scores mean (`load_scorer` reads rankiqa.json)

    @classmethod
    def in_graph(cls, network_fn, views):
        """A scoring branch of the current (training) graph: inference mode, the training
        variables reused. Pass the training loop's session to each call."""
        images = tf.placeholder(tf.float32, [None, None, None, 3])
        score, end_points = network_fn(network_fn.preprocess(images), is_training=False,
                                       reuse=True)
        features = end_points.get("features")
        if features is not None:
            features = tf.reshape(features, [tf.shape(images)[0], -1])
        return cls(images, score, views, features=features, net_name=network_fn.name)

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

    def view_scores(self, stacks, session=None):
        """``stacks: [n, views, crop, crop, 3]`` -> scores ``[n, views]``."""
        stacks = np.asarray(stacks)
        flat = stacks.reshape(-1, *stacks.shape[2:])
        return self.run(self.score, flat, session).reshape(stacks.shape[:2])

    def crop_scores(self, images, views=None, seeds=None, session=None):
        """Scores ``[len(images), views.count]`` of decoded images (uint8 ``[H, W, 3]``);
        image k's random views drawn with ``seeds[k]`` (default 0)."""
        views = views or self.views
        seeds = [0] * len(images) if seeds is None else seeds
        if not len(images):
            return np.zeros((0, views.count), np.float32)
        return self.view_scores(np.stack([views.apply(im, s) for im, s in zip(images, seeds)]),
                                session)

    def score_images(self, images, views=None, aggregate="mean", seed=0, session=None):
        """One score per decoded image: its views' scores combined by mean or median."""
        if aggregate not in AGGREGATES:
            raise InputError(f"unknown aggregate {aggregate!r}; choose from {list(AGGREGATES)}")
        views = views or self.views
        per_call = max(1, self.batch_size // views.count)  # decode-and-crop a batch at a time
        per_image = np.concatenate(
            [self.crop_scores(images[i:i + per_call], views, [seed] * per_call, session)
             for i in range(0, len(images), per_call)] or [np.zeros((0, views.count))])
        return per_image.mean(axis=1) if aggregate == "mean" else np.median(per_image, axis=1)

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

    def __init__(self, scorer, opset=13):
        onnxruntime = require_onnx("onnxruntime")
        super().__init__(scorer.images, scorer.score, scorer.views, net_name=scorer.net_name,
                         batch_size=scorer.batch_size)
        self.report, self.precision, self.scale = scorer.report, scorer.precision, scorer.scale
        frozen = frozen_graph_def(scorer)
        path = onnx_cache_path(frozen, scorer, opset)
        if path and os.path.isfile(path):
            try:
                self.ort_session = _ort_session(onnxruntime, path)
                self.cached = path
                return
            except Exception:  # not a model (damaged outside rankiqa): convert it again
                os.remove(path)
        model = onnx_model(scorer, opset, frozen).SerializeToString()
        self.ort_session = _ort_session(onnxruntime, model)
        self.cached = _write_cache(path, model) if path else None

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
    ``~/.cache/rankiqa/onnx``. Converting costs about as much as loading the model (P10)."""
    folder = os.environ.get(ONNX_CACHE_ENV)
    if folder == "off":
        return None
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "rankiqa", "onnx")
    tf2onnx = require_onnx("tf2onnx")
    digest = hashlib.sha256(frozen.SerializeToString(deterministic=True))
    digest.update(f"|tf2onnx {tf2onnx.__version__}|opset {opset}|{scorer.images.name}|"
                  f"{scorer.score.name}".encode())
    return os.path.join(folder, f"{digest.hexdigest()}.onnx")


def _ort_session(onnxruntime, model):
    return onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])


def _write_cache(path, model):
    """Keeps a converted model (`rundir.write_atomic`); returns `path`, or None when the folder
    cannot be written (the next load converts again)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        rundir.write_atomic(path, model)
        return path
    except OSError:
        return None


def score_scale(info):
    """What a model's scores mean, from its ``rankiqa.json`` (`info`; {} without one)."""
    if info.get("score_scale"):  # a built-in model states its own
        return info["score_scale"]
    if info.get("stage") == "finetune":
        dataset = (info.get("config") or {}).get("data", {}).get("dataset", "?")
        return f"normalised MOS in [0, 1] ({dataset}), higher is better"
    if info.get("stage") == "rank":
        return "uncalibrated ranking score (stage one only), higher is better"
    return "the model's output (no rankiqa.json: scale unknown), higher is better"


def model_views(info, net_name, crop_size=None):
    """The `Views` a model was validated with (its ``rankiqa.json``), else one centre crop at
    the network's default size; `crop_size` overrides the side."""
    recorded = info.get("views") or {}
    crop = crop_size or recorded.get("crop") or info.get("crop_size")
    crop = crop or nets.get_network_fn(net_name).default_image_size
    return Views(int(crop), int(recorded.get("count", 1)), recorded.get("mode", "grid"))


def load_scorer(model=None, net=None, weights_file=None, crop_size=None, device="auto",
                allow_pickle=False, batch_size=64, precision="fp32", engine="tensorflow"):
    """A `Scorer` owning its graph and session, restored once.

    Args:
      model: training directory or checkpoint prefix, an .npz from export-npy (as
        `weights_file`), or a built-in model's name (`rankiqa.models`); None with
        `weights_file`.
      net: network name when the model has no rankiqa.json beside it (required with
        `weights_file`).
      weights_file: an .npz (or, with `allow_pickle`, a dict .npy) from ``export-npy``.
      crop_size: view side; default: the model's (rankiqa.json) or the network's default.
      precision: fp32 | mixed | auto (`rankiqa.rundir.resolve_precision`): mixed computes in
        16 bits, the weights staying float32.
      engine: tensorflow | onnx (`OnnxScorer`: ONNX Runtime on the CPU, float32; converting
        the graph costs seconds once, each batch then runs faster).

    Raises:
      CheckpointError: the weights do not fit the network.
      InputError: no network name can be found.
    """
    if model is not None and model.endswith((".npz", ".npy")) and os.path.isfile(model):
        model, weights_file = None, model  # an export-npy file given as the model
    if (model is None) == (weights_file is None):
        raise InputError("scoring needs exactly one of a checkpoint and a weights file")
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose from {list(ENGINES)}")
    if engine == "onnx":
        if device == "gpu" or precision == "mixed":
            raise InputError("the onnx engine computes in float32 on the CPU; use --engine "
                             "tensorflow for --device gpu or --precision mixed")
        require_onnx("tf2onnx", "onnxruntime")  # before seconds of loading, not after
    if models.is_builtin(model):
        builtin = models.get(model)
        source, info = builtin.arrays(), builtin.run_info()
    elif model is not None and not (tf.io.gfile.exists(model)
                                    or tf.io.gfile.exists(model + ".index")):  # gs:// too
        raise InputError(f"model {model}: no such training folder, checkpoint or file, and "
                         f"not a built-in model (choose from {sorted(models.BUILTIN)})")
    else:
        source = weights_file if model is None else weights.resolve_checkpoint(model)
        info = {} if model is None else rundir.find_run_info(model)
    net_name = net or info.get("net")
    if net_name is None:
        what = "an .npz model needs --net" if model is None else (
            f"{model}: no {rundir.RUN_INFO_NAME} beside it; pass --net")
        raise InputError(f"{what} (the network name, one of {sorted(nets.networks_map)})")
    views = model_views(info, net_name, crop_size)
    graph = tf.Graph()
    with graph.as_default(), tf.device(rundir.get_device(device)):
        # a run's own pooled blocks (net.pooled_blocks), else the network's default
        pooled = (info.get("config") or {}).get("net", {}).get("pooled_blocks") or ()
        images, score, _ = build_scoring_graph(net_name, tuple(pooled))
        variables = tf.global_variables()
        init_op = tf.variables_initializer(variables)
    precision = rundir.resolve_precision(
        precision, gpu=device != "cpu" and bool(tf.config.list_physical_devices("GPU")))
    session = tf.Session(graph=graph, config=rundir.session_config(precision))
    try:
        with graph.as_default():
            session.run(init_op)
            report = weights.load_into(session, source, variables, net_name, allow_pickle)
        weights.check_fit(report, allow_missing=False,
                          hint=f"it does not fit {net_name}; name the right one with --net")
    except BaseException:
        session.close()
        raise
    scorer = Scorer(images, score, views, session=session, net_name=net_name,
                    batch_size=batch_size)
    scorer.report = report
    scorer.precision = precision
    scorer.scale = score_scale(info)
    if engine == "onnx":
        with scorer:  # its graph is converted; its session is no longer needed
            return OnnxScorer(scorer)
    return scorer
