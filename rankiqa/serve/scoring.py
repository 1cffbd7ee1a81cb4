"""From pixels to scores: the scoring graph and the one `Scorer` every path goes through.

The graph takes float32 RGB images in the uint8 range, ``rankiqa/images`` ``[None, H, W, 3]``,
applies the network's own preprocessing inside, and returns ``rankiqa/score`` ``[None]`` on the
model's scale (`rankiqa.serve.scales`: its labels' range and direction, or normalised), so that no
caller ever normalises pixels or maps scores itself.

A `Scorer` either owns its graph and session (`load_scorer`: ``evaluate``, ``predict``, the
exports), or runs that graph converted in ONNX Runtime (`rankiqa.serve.engines`), or is a
branch of a training graph that reuses its variables (`Scorer.in_graph`: validation, the probe,
stage one's held-out ranking accuracy), fed the session of the training loop. It is complete
when built: one frozen `ModelInfo` says what its scores mean and what computes them. Every
image any command scores goes through `Scorer.iter_scores`: decoding and view placement in
threads, overlapped with the network, a bounded number of batches ahead.
"""

import collections
import concurrent.futures
import dataclasses
import os
from typing import Optional

import numpy as np

from rankiqa import nets
from rankiqa.compat import quiet_native, tf
from rankiqa.data import images as images_lib
from rankiqa.preprocessing import views as views_lib
from rankiqa.data.images import BadImageError
from rankiqa.errors import InputError, RankiqaError
from rankiqa.run import device as device_lib
from rankiqa.run import rundir
from rankiqa.serve import engines, quantize, scales
from rankiqa.weights import restore

INPUT_NAME = "rankiqa/images"
OUTPUT_NAME = "rankiqa/score"
AGGREGATES = views_lib.AGGREGATES
ENGINES = engines.ENGINES
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


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a `Scorer`'s scores mean and what computes them, fixed when it is built.

    Attributes:
      net: the network's name.
      scale: what the scores mean (`rankiqa.serve.scales.Scale`).
      ref: the model reference it was loaded from (None: a training graph's branch).
      description: the model's run description (``rankiqa.json``; `restore.open_model`).
      report: the `rankiqa.weights.restore.RestoreReport` of its weights, where restored.
      precision: fp32 | mixed: how its session computes.
      engine: tensorflow | onnx | onnx-int8.
      engine_note: why `--engine auto` chose the engine, and what its cache did.
    """

    net: str
    scale: scales.Scale
    ref: Optional[str] = None
    description: dict = dataclasses.field(default_factory=dict)
    report: object = None
    precision: str = "fp32"
    engine: str = "tensorflow"
    engine_note: Optional[str] = None


class Scorer:
    """Scores crops through a graph: `images` in, `score` (and pooled `features`) out.

    Args:
      images: float32 placeholder ``[None, H, W, 3]``, uint8-range RGB.
      score: ``[None]`` scores.
      views: the model's own evaluation `Views` (the default of every scoring call).
      model: its `ModelInfo`.
      features: pooled features ``[None, d]`` or None.
      session: the session to run in (None: pass one to each call).
      batch_size: crops per session run.
      onnx: an `rankiqa.serve.engines.OnnxRunner` that computes the scores instead of the
        session (``model.engine`` onnx).
      in_training: a branch of a training graph (`in_graph`): non-finite scores mean the
        weights diverged.
    """

    def __init__(self, images, score, views, model, features=None, session=None,
                 batch_size=64, onnx=None, in_training=False):
        self.images, self.score, self.features = images, score, features
        self.views, self.model, self.session = views, model, session
        self.batch_size, self.onnx, self.in_training = batch_size, onnx, in_training
        self.graph = score.graph

    @classmethod
    def in_graph(cls, network_fn, views):
        """A scoring branch of the current (training) graph: inference mode, the training
        variables reused. Pass the training loop's session to each call."""
        images = tf.placeholder(tf.float32, [None, None, None, 3])
        score, end_points = network_fn(network_fn.preprocess(images), is_training=False,
                                       reuse=True)
        model = ModelInfo(net=network_fn.name, scale=scales.of_model({}))
        return cls(images, score, views, model, features=_pooled_features(end_points, images),
                   in_training=True)

    def run(self, tensor, crops, session=None):
        """`tensor` for ``crops: [N, H, W, 3]``, `batch_size` crops per run."""
        if self.onnx is not None:
            if tensor is not self.score:
                raise InputError("the onnx engine computes scores only; use the tensorflow "
                                 "engine")
            return self.onnx.run(crops, self.batch_size)
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
        views are drawn from `rankiqa.preprocessing.views.VIEW_SEED`, as in every command.

        Args:
          items: paths, PIL images or uint8 arrays (`rankiqa.data.images.as_image`), or any
            of them with views of its own (`rankiqa.preprocessing.views.Viewed`).
          views: `rankiqa.preprocessing.views.Views`; default: the scorer's own.
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

        def place(start):  # in a decoding thread: the batch arrives ready to run
            return start, *place_batch(items, range(start, min(start + per_batch, len(items))),
                                       views)

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
                    if fetch is self.score:
                        self.check_finite(values)
                used = 0
                for k, p in enumerate(placed, start=start):
                    if isinstance(p, BadImageError):
                        yield k, p
                    else:
                        yield k, values[used]
                        used += 1
                if progress:
                    progress(start + len(placed), len(items))

    def check_finite(self, scores):
        """Refuses scores that are NaN or infinite, naming why they would be."""
        if np.isfinite(scores).all():
            return
        bad = scores[~np.isfinite(scores)][0]
        if self.in_training:
            raise RankiqaError(f"validation scores became {bad}: the weights diverged; lower "
                               "optim.lr or set optim.clip_gradient_norm")
        raise RankiqaError(f"the model {self.model.ref or self.model.net} gives non-finite "
                           f"scores ({bad}): its weights hold NaN or infinite values; score "
                           "with another model")

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
        if self.onnx is not None:
            self.onnx.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def place_batch(items, ks, views):
    """(each of ``items[k]`` for k in `ks` as its views ``[count, crop, crop, 3]`` uint8 or its
    `BadImageError`, the good ones' views concatenated or None); an item that is a
    `rankiqa.preprocessing.views.Viewed` is placed by its own views, of the same count. uint8:
    a float32 copy made here measured no faster, and would hold 4x the memory ahead."""
    placed = []
    for k in ks:
        item, item_views = items[k], views
        if isinstance(item, views_lib.Viewed):
            item, item_views = item
            if item_views.count != views.count:
                raise InputError(f"item {k} has {item_views.count} views, the call "
                                 f"{views.count}: one call scores one count of views")
        try:
            image = images_lib.as_image(item, k, pillow=True)
        except BadImageError as e:
            placed.append(e)
            continue
        try:
            placed.append(item_views.apply(image))
        except BadImageError as e:  # its views cannot be placed: named as its path is
            name = item if isinstance(item, (str, os.PathLike)) else f"image {k}"
            placed.append(BadImageError(f"{os.fspath(name)}: {e}"))
    good = [p for p in placed if not isinstance(p, BadImageError)]
    return placed, np.concatenate(good) if good else None


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
      engine: tensorflow | onnx (`rankiqa.serve.engines.OnnxRunner`: ONNX Runtime on the CPU,
        float32; converting the graph costs seconds once, each batch then runs faster) |
        onnx-int8 (that conversion quantised, `rankiqa.serve.quantize.Int8`) | auto
        (`rankiqa.serve.engines.choose_engine`).
      pooled_blocks: the blocks a pooled head reads; default: the run's own, else the
        network's.
      normalised: scores in [0, 1], higher better, as the model trained on them; default: on
        its labels' own scale (`rankiqa.serve.scales.of_model`).

    Raises:
      CheckpointError: the weights do not fit the network.
      InputError: no network name can be found.
    """
    check_engine(engine, device, precision)  # before seconds of loading, not after
    if engine == "onnx-int8":
        quantize.check_int8(model)
    source, info = restore.open_model(model, net, allow_pickle)
    net_name = info["net"]
    if net_name is None:
        what = ("an .npz model needs --net" if os.path.isfile(info["ref"]) else
                f"{info['ref']}: no {rundir.RUN_INFO_NAME} beside it; pass --net")
        raise InputError(f"{what} (the network name, one of {sorted(nets.networks_map)})")
    if pooled_blocks is None:  # a run's own pooled blocks (net.pooled_blocks), else the default
        pooled_blocks = (info.get("config") or {}).get("net", {}).get("pooled_blocks") or ()
    scale = scales.of_model(info, normalised)
    graph = tf.Graph()
    with quiet_native():  # the first tf.Session logs natively (cuInit on a CPU machine)
        with graph.as_default(), tf.device(device_lib.get_device(device)):
            images, score, features = build_scoring_graph(net_name, tuple(pooled_blocks), scale)
        precision = device_lib.resolve_precision(
            precision, gpu=device != "cpu" and bool(tf.config.list_physical_devices("GPU")))
        session, report = _restored_session(graph, source, precision, net_name)
    model_info = ModelInfo(net=net_name, scale=scale, ref=info["ref"], description=info,
                           report=report, precision=precision)
    scorer = Scorer(images, score, model_views(info, net_name, crop_size), model_info,
                    features=features, session=session, batch_size=batch_size)
    return on_engine(scorer, engine, device) if engine != "tensorflow" else scorer


def check_engine(engine, device, precision):
    """Refuses an engine that is unknown or cannot compute as asked, and the onnx engine
    without its packages."""
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose from {list(ENGINES)}")
    if engine in ("onnx", "onnx-int8"):
        if device == "gpu" or precision == "mixed":
            raise InputError(f"the {engine} engine runs on the CPU in {engine[5:] or 'float32'}; "
                             "use --engine tensorflow for --device gpu or --precision mixed")
        engines.require_onnx("tf2onnx", "onnxruntime")


def _restored_session(graph, source, precision, net_name):
    """A session of `graph` with every variable restored from `source`: (session, report)."""
    with graph.as_default():
        variables = tf.global_variables()
        init_op = tf.variables_initializer(variables)
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
    return session, report


def on_engine(scorer, engine, device="auto"):
    """`scorer` (TensorFlow, owning its session) as `engine` (onnx | onnx-int8 | auto) runs
    it: a new `Scorer` whose `ModelInfo` says which engine and why; the TensorFlow session is
    closed once its graph is converted."""
    frozen, note = None, None  # auto's frozen graph, which the onnx engine then reuses
    if engine == "auto":
        engine, note, frozen = engines.choose_engine(scorer, device, scorer.model.precision)
    if engine == "tensorflow":
        return Scorer(scorer.images, scorer.score, scorer.views,
                      dataclasses.replace(scorer.model, engine_note=note),
                      features=scorer.features, session=scorer.session,
                      batch_size=scorer.batch_size)
    variant = None
    if engine == "onnx-int8":
        variant = quantize.Int8(scorer.views, quantize.ranges_file(scorer.model.ref))
        note = f"calibrated on {variant.source}"
    with scorer:  # its graph is converted; its session is no longer needed
        onnx = engines.OnnxRunner(scorer, frozen=frozen, variant=variant)
    notes = "; ".join(n for n in (note, onnx.note) if n) or None
    model = dataclasses.replace(scorer.model, engine=engine, engine_note=notes)
    return Scorer(scorer.images, scorer.score, scorer.views, model, batch_size=scorer.batch_size,
                  onnx=onnx)
