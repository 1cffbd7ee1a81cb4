"""Scoring for users: `load_model` (the Python API) and `predict` (``rankiqa predict``).

A model is a built-in one's name (`rankiqa.weights.builtin`; the default), a training folder or checkpoint
prefix, or an ``.npz`` from ``export-npy`` (with its network's name). Each image is scored by the
mean over the model's own evaluation views (its ``rankiqa.json``) unless other views are asked
for. Scores are on the model's scale (`rankiqa.serve.scales`): a fine-tuned model's on its labels' own
range and direction (``normalised=True``: [0, 1], higher better, as it trained), a built-in
model's BIQ2021 MOS in [0, 1]; after stage one only, an uncalibrated ranking score (higher
better).

    import rankiqa
    with rankiqa.load_model() as model:          # the default built-in model
        scores = model.score(["a.jpg", "b.png"])  # numpy float32 [2]
"""

import dataclasses
import os

import numpy as np
from PIL import Image

from rankiqa.serve import scales, scoring
from rankiqa.data import images as images_lib
from rankiqa.errors import InputError
from rankiqa.preprocessing import views as views_lib


class Model:
    """A quality model ready to score: one graph and one session, reused by every call.

    Attributes:
      name: what it was loaded from; views: its own `rankiqa.preprocessing.views.Views`; scale: what its
      scores mean; net: the network's name; scorer: its `rankiqa.serve.scoring.Scorer`; engine: what
      runs it (and why, where ``engine="auto"`` chose); lower_better: True where a lower
      score is better (a model fine-tuned on DMOS, on its labels' scale); score_range:
      ``(low, high)`` of its scores (the labels' ``(1.0, 5.0)``, normalised ``(0.0, 1.0)``),
      None where the scale is open (stage one's ranking scores, a model without rankiqa.json).
    """

    def __init__(self, scorer, name):
        self.scorer, self.name, self.closed = scorer, name, False
        self.views, self.scale, self.net = scorer.views, scorer.model.scale.text, scorer.model.net
        kind, note = scorer.model.engine, scorer.model.engine_note
        self.engine = f"{kind} ({note})" if note else kind
        self.score_range = scorer.model.scale.score_range
        self.lower_better = not scorer.model.scale.higher_is_better

    def score(self, images, views=None):
        """Scores of paths, PIL images or uint8 arrays (``[H, W, 3]`` or grey ``[H, W]``), each
        the mean over `views` (default: the model's own; random views drawn as every command
        draws them, `rankiqa.preprocessing.views.VIEW_SEED`).

        Arrays may also be integers in 0-255, or floats in [0, 1] or [0, 255]
        (`rankiqa.data.images.as_image`: an unclear range is refused).

        Returns:
          a float for one image; float32 ``[len(images)]`` for a list (or ``[N, H, W, 3]``).
        """
        if self.closed:
            raise InputError(f"the model {self.name} was closed (close() or the end of its "
                             "with block); load it again with rankiqa.load_model")
        if isinstance(images, (str, os.PathLike, Image.Image)) or (
                isinstance(images, np.ndarray) and images.ndim <= 3):
            return float(self.scorer.score_items([images], views or self.views)[0])
        return self.scorer.score_items(list(images), views or self.views)

    __call__ = score  # pyiqa's habit: metric(image)

    def close(self):
        if not self.closed:
            self.scorer.close()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_model(model=None, net=None, device="auto", batch_size=64, precision="fp32",
               allow_pickle=False, engine="auto", normalised=False):
    """A `Model` from `model`: a built-in model's name (default `rankiqa.weights.builtin.DEFAULT`), a
    training folder or checkpoint prefix, or an export-npy ``.npz`` (with `net`).

    Args:
      batch_size: views per session run.
      precision: fp32 | mixed | auto (`rankiqa.run.device.resolve_precision`).
      allow_pickle: let `model` be a pickled ``.npy`` dict (a pickle can run code).
      engine: tensorflow | onnx (ONNX Runtime on the CPU: `rankiqa.serve.engines.OnnxRunner`) |
        auto (the faster of the two here where their scores agree: `engines.choose_engine`).
      normalised: scores in [0, 1], higher better; default: the model's labels' scale.
    """
    scorer = scoring.load_scorer(model, net=net, device=device, allow_pickle=allow_pickle,
                                 batch_size=batch_size, precision=precision, engine=engine,
                                 normalised=normalised)
    return Model(scorer, scorer.model.ref)


@dataclasses.dataclass(frozen=True)
class Used:
    model: str  # the reference it was loaded from (the default model's name when none)
    views: views_lib.Views
    scale: scales.Scale  # what the scores mean: their text, range and direction
    engine: str  # what ran the network, and why where auto chose it
    ignored: tuple = ()  # files of the folders left out by name (a label file, notes)


def predict(paths, model=None, net=None, views=None, batch_size=64, device="auto",
            allow_pickle=False, precision="fp32", engine="auto", progress=None,
            normalised=False):
    """Scores every readable image under `paths` (files and folders, recursively).

    Args:
      model, engine, normalised: as `load_model`'s.
      views: `rankiqa.preprocessing.views.Views`, or a function from the model's own views to those to
        use; None: the model's own.
      progress: optional ``progress(done, total)``, called as files are scored or skipped.

    Returns:
      (rows ``[{"path", "score"}]``, problems ``[message]`` for files that were skipped,
      `Used`: the views used and what the scores mean, and the files of the folders that were
      left out by name, `rankiqa.data.images.NOT_IMAGES`).
    """
    ignored = []
    files, problems = images_lib.list_files(paths, ignored)
    rows = []
    with load_model(model, net=net, device=device, batch_size=batch_size, precision=precision,
                    allow_pickle=allow_pickle, engine=engine, normalised=normalised) as loaded:
        views = views(loaded.views) if callable(views) else (views or loaded.views)
        for k, values in loaded.scorer.iter_scores(files, views, progress=progress):
            if isinstance(values, images_lib.BadImageError):  # reported and skipped
                problems.append(str(values))
            else:
                rows.append({"path": files[k], "score": float(values.mean())})
    return rows, problems, Used(loaded.name, views, loaded.scorer.model.scale, loaded.engine, tuple(ignored))
