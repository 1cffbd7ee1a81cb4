"""Scoring for users: `load_model` (the Python API) and `predict` (``rankiqa predict``).

A model is a built-in one's name (`rankiqa.models`; the default), a training folder or checkpoint
prefix, or an ``.npz`` from ``export-npy`` (with its network's name). Each image is scored by the
mean over the model's own evaluation views (its ``rankiqa.json``) unless other views are asked
for. Scores are the model's output: after fine-tuning or from a built-in model, normalised MOS in
[0, 1] with higher better; after stage one only, an uncalibrated ranking score (higher better).

    import rankiqa
    with rankiqa.load_model() as model:          # the default built-in model
        scores = model.score(["a.jpg", "b.png"])  # numpy float32 [2]
"""

import dataclasses
import os

import numpy as np
from PIL import Image

from rankiqa import models, scoring
from rankiqa.data import views as views_lib
from rankiqa.errors import InputError


def _as_image(item, k):
    """A path, a PIL image or a uint8 array ([H, W, 3], or [H, W] grey) -> uint8 [H, W, 3]."""
    if isinstance(item, (str, os.PathLike)):
        return views_lib.load_image(os.fspath(item))
    if isinstance(item, Image.Image):
        return np.asarray(item.convert("RGB"))
    array = np.asarray(item)
    if array.dtype == np.uint8 and array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3:
        return array
    raise InputError(f"image {k}: expected a path, a PIL image or a uint8 array [H, W, 3] (or "
                     f"[H, W] grey), got {array.dtype} {list(array.shape)}")


class Model:
    """A quality model ready to score: one graph and one session, reused by every call.

    Attributes:
      name: what it was loaded from; views: its own `rankiqa.data.views.Views`; scale: what its
      scores mean; net: the network's name.
    """

    def __init__(self, scorer, name):
        self._scorer, self.name = scorer, name
        self.views, self.scale, self.net = scorer.views, scorer.scale, scorer.net_name

    def score(self, images, views=None):
        """Scores ``[len(images)]`` (float32) of paths, PIL images or uint8 arrays, each the
        mean over `views` (default: the model's own; random views seeded 0, as `predict`)."""
        views = views or self.views
        if isinstance(images, (str, os.PathLike, Image.Image)) or (
                isinstance(images, np.ndarray) and images.ndim <= 3):
            raise InputError("score takes a list of images; wrap a single one in a list")
        per_call = max(1, self._scorer.batch_size // views.count)  # decoded a batch at a time
        images, out = list(images), []
        for i in range(0, len(images), per_call):
            batch = [_as_image(item, i + k) for k, item in enumerate(images[i:i + per_call])]
            out.append(self._scorer.crop_scores(batch, views).mean(axis=1))
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def close(self):
        self._scorer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_model(model=None, net=None, device="auto", batch_size=64, precision="fp32",
               allow_pickle=False, engine="tensorflow"):
    """A `Model` from `model`: a built-in model's name (default `rankiqa.models.DEFAULT`), a
    training folder or checkpoint prefix, or an export-npy ``.npz`` (with `net`).

    Args:
      batch_size: views per session run.
      precision: fp32 | mixed | auto (`rankiqa.rundir.resolve_precision`).
      allow_pickle: let `model` be a pickled ``.npy`` dict (a pickle can run code).
      engine: tensorflow | onnx (ONNX Runtime on the CPU: `rankiqa.scoring.OnnxScorer`).
    """
    model = models.DEFAULT if model is None else os.fspath(model)
    scorer = scoring.load_scorer(model, net=net, device=device, allow_pickle=allow_pickle,
                                 batch_size=batch_size, precision=precision, engine=engine)
    return Model(scorer, model)


@dataclasses.dataclass(frozen=True)
class Used:
    views: views_lib.Views
    scale: str  # `rankiqa.scoring.score_scale`


def predict(paths, model=None, net=None, views=None, batch_size=64, device="auto",
            allow_pickle=False, precision="fp32", engine="tensorflow", progress=None):
    """Scores every readable image under `paths` (files and folders, recursively).

    Args:
      model, engine: as `load_model`'s.
      views: `rankiqa.data.views.Views`, or a function from the model's own views to those to
        use; None: the model's own.
      progress: optional ``progress(done, total)``, called as files are scored or skipped.

    Returns:
      (rows ``[{"path", "score"}]``, problems ``[message]`` for files that were skipped,
      `Used`: the views used and what the scores mean).
    """
    files, problems = views_lib.list_files(paths)
    rows, missing = [], len(problems)  # paths that do not exist are not files to score
    with load_model(model, net=net, device=device, batch_size=batch_size, precision=precision,
                    allow_pickle=allow_pickle, engine=engine) as scorer:
        views = views(scorer.views) if callable(views) else (views or scorer.views)
        per_call = max(1, batch_size // views.count)
        pending, pending_paths = [], []
        if progress:
            progress(0, len(files))  # the clock starts with the work, not with the model

        def flush():
            if pending:
                scores = scorer.score(pending, views)
                rows.extend({"path": p, "score": float(s)} for p, s in zip(pending_paths, scores))
                pending.clear()
                pending_paths.clear()
            if progress:
                progress(len(rows) + len(problems) - missing, len(files))

        for path in files:
            try:
                image = views_lib.load_image(path)
            except views_lib.BadImageError as e:  # reported and skipped, never a crash
                problems.append(str(e))
                continue
            pending.append(image)
            pending_paths.append(path)
            if len(pending) >= per_call:
                flush()
        flush()
    return rows, problems, Used(views, scorer.scale)
