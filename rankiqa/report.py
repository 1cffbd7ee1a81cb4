"""A picture of what stage one learned: ``report.png`` for the demo (and any train-rank run).

Top: the training curves from the run's own logs (the loss from its TensorBoard events, the
held-out rank accuracy from ``eval.json``'s history). Below, a contact sheet: each held-out
group (one unseen reference under one distortion family) in the order the model scores it,
best first, with the score and the true level under each image. A group in perfect order reads
L0 L1 ... L5 from left to right; a level out of place is drawn in red, so mistakes show.
"""

import os

import numpy as np
from PIL import Image

from rankiqa.run import rundir

THUMB = 96  # px per contact-sheet image


def training_curves(train_dir):
    """(loss steps, loss values, evaluation steps, held-out rank accuracies) of a run."""
    from tensorboard.backend.event_processing import event_accumulator

    events = event_accumulator.EventAccumulator(train_dir, size_guidance={"scalars": 0})
    events.Reload()
    loss = events.Scalars("loss") if "loss" in events.Tags()["scalars"] else []
    history = rundir.read_json(os.path.join(train_dir, rundir.EVAL_NAME)).get("history", [])
    return ([e.step for e in loss], [e.value for e in loss], [h["step"] for h in history],
            [h["rank_accuracy"] for h in history])


def _thumbnail(path):
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((THUMB, THUMB), Image.LANCZOS)
        return np.asarray(im)


def write_report(train_dir, out_path, title="rankiqa stage one"):
    """Writes `out_path` (PNG) for the train-rank run in `train_dir`; returns the figures
    shown: ``{"rank_accuracy", "groups", "groups_in_order"}``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    from matplotlib.figure import Figure

    evaluation = rundir.read_json(os.path.join(train_dir, rundir.EVAL_NAME))
    groups = evaluation.get("group_scores") or []
    levels = max((len(g["scores"]) for g in groups), default=0)
    loss_steps, loss, eval_steps, accuracy = training_curves(train_dir)

    rows = len(groups)
    fig = Figure(figsize=(max(8.0, 1.25 * levels + 2.5), 3.2 + 1.35 * rows), dpi=100,
                 layout="constrained")
    grid = fig.add_gridspec(rows + 2, levels or 1, height_ratios=[2.4, 0.25] + [1.0] * rows)
    curves = grid[0, :].subgridspec(1, 2, wspace=0.3)
    ax = fig.add_subplot(curves[0, 0])
    ax.plot(loss_steps, loss, color="tab:blue")
    ax.set(xlabel="step", ylabel="ranking loss (hinge)", title="training loss")
    ax.grid(True, alpha=0.3)
    ax = fig.add_subplot(curves[0, 1])
    ax.plot(eval_steps, accuracy, "o-", color="tab:green")
    ax.set(xlabel="step", ylabel="pairs in the right order", ylim=(0, 1.02),
           title="held-out rank accuracy")
    ax.grid(True, alpha=0.3)
    in_order = 0
    for r, group in enumerate(groups):
        order = np.argsort(-np.asarray(group["scores"]), kind="stable")  # best first
        in_order += bool(np.all(order == np.arange(len(order))))
        for position, level in enumerate(order):
            ax = fig.add_subplot(grid[r + 2, position])
            ax.imshow(_thumbnail(group["paths"][level]))
            ax.set_xticks([])
            ax.set_yticks([])
            wrong = position != level
            for spine in ax.spines.values():
                spine.set_color("red" if wrong else "black")
                spine.set_linewidth(2.5 if wrong else 0.5)
            ax.set_xlabel(f"L{level}  {group['scores'][level]:.3g}", fontsize=8,
                          color="red" if wrong else "black")
            if position == 0:
                ax.set_ylabel(f"{group['reference']}\n{group['distortion']}", fontsize=8)
    figures = {"rank_accuracy": evaluation.get("rank_accuracy"), "groups": rows,
               "groups_in_order": in_order}
    fig.suptitle(f"{title}: held-out rank accuracy {figures['rank_accuracy']:.3f} at step "
                 f"{evaluation.get('step')}; {in_order} of {rows} unseen groups in perfect "
                 "order\n(each row: one unseen photo, its distorted copies sorted by the "
                 "model's score, best first; L = true level, 0 = pristine; red = out of place)",
                 fontsize=10)
    fig.savefig(out_path, format="png")
    return figures
