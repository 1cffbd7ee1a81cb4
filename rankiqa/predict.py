"""`rankiqa predict`: quality scores for image files and folders.

Folders are searched recursively; a file that cannot be decoded (truncated, not an image) is
reported and skipped, never a crash. Each image is scored by the mean over the model's own
evaluation views (its ``rankiqa.json``) unless other views are asked for. Scores are the
model's output: after fine-tuning, normalised MOS in [0, 1] with higher better; after stage one
only, an uncalibrated ranking score (higher better).
"""

import dataclasses

from rankiqa import scoring
from rankiqa.data import views as views_lib


@dataclasses.dataclass(frozen=True)
class Used:
    views: views_lib.Views
    scale: str  # `rankiqa.scoring.score_scale`


def predict(paths, model=None, net=None, views=None, batch_size=64, device="auto",
            weights_file=None, allow_pickle=False, precision="fp32"):
    """Scores every readable image under `paths`.

    Args:
      paths: files and folders.
      model: training directory or checkpoint prefix; or `weights_file` (with `net`).
      views: `rankiqa.data.views.Views`, or a function from the model's own views to those to
        use; None: the model's own.
      precision: fp32 | mixed | auto (`rankiqa.rundir.resolve_precision`).

    Returns:
      (rows ``[{"path", "score"}]``, problems ``[message]`` for files that were skipped,
      `Used`: the views used and what the scores mean).
    """
    files, problems = views_lib.list_files(paths)
    rows = []
    with scoring.load_scorer(model, net=net, weights_file=weights_file, device=device,
                             allow_pickle=allow_pickle, batch_size=batch_size,
                             precision=precision) as scorer:
        views = views(scorer.views) if callable(views) else (views or scorer.views)
        per_call = max(1, batch_size // views.count)
        pending, pending_paths = [], []

        def flush():
            if pending:
                scores = scorer.crop_scores(pending, views).mean(axis=1)
                rows.extend({"path": p, "score": float(s)} for p, s in zip(pending_paths, scores))
                pending.clear()
                pending_paths.clear()

        for path in files:
            try:
                image = views_lib.load_image(path)
            except views_lib.BadImageError as e:
                problems.append(str(e))
                continue
            pending.append(image)
            pending_paths.append(path)
            if len(pending) >= per_call:
                flush()
        flush()
    return rows, problems, Used(views, scorer.scale)
