"""The linear probe: a quality head fitted in closed form on frozen features, before fine-tuning.

Fine-tuning a pretrained backbone under a randomly initialised head first spends its steps
(and distorts the backbone's features) while the head finds its way; fitting the head by ridge
regression on the frozen features first and fine-tuning from there ("LP-FT", Kumar et al.,
ICLR 2022) starts the backbone from a head that already ranks well. On BIQ2021 with VGG-16 the
probe alone is the "frozen backbone" result of the README.

The head is linear in the network's pooled features (``end_points["features"]``): either
``logits(features)`` (resnet_v2, vgg_16) or ``logits(feature_norm(features))`` with a batch-norm
layer in inference mode (vgg_16_pooled). Ridge runs on standardised features; the
standardisation is then written into the batch-norm statistics, or folded into the weights.
"""

import numpy as np
from scipy import stats

from rankiqa import rundir, weights
from rankiqa.errors import InputError
from rankiqa.progress import Progress

BN_EPSILON = 0.001  # slim.batch_norm's default epsilon, which the head uses


def _ridge(x, y, alphas):
    """Ridge weights for each alpha from one eigendecomposition of the smaller of the n x n
    Gram matrix (dual form) and the d x d covariance (primal form): the same solution, at the
    cube of the smaller side. (10,800 views x 4,240 EfficientNet features: the dual form's
    eigendecompositions took minutes each on 2 cores, the primal one seconds.)"""
    if len(x) <= x.shape[1]:
        eigval, eigvec = np.linalg.eigh(x @ x.T)
        projected = eigvec.T @ y
        return [x.T @ (eigvec @ (projected / (eigval + alpha))) for alpha in alphas]
    eigval, eigvec = np.linalg.eigh(x.T @ x)
    projected = eigvec.T @ (x.T @ y)
    return [eigvec @ (projected / (eigval + alpha)) for alpha in alphas]


def fit_ridge(features, targets, alphas, folds=5, seed=0, groups=None):
    """Standardised ridge regression, its alpha chosen by `folds`-fold cross-validated SROCC.

    Args:
      features: ``[n, d]`` (one row per view; several rows may share an image).
      targets: ``[n]`` quality scores.
      alphas: candidate L2 penalties.
      groups: ``[n]`` image ids, so that the views of one image stay in one fold.

    Returns:
      dict: ``mean``, ``std`` (``[d]``), ``weights`` (``[d]``, on standardised features),
      ``bias``, ``alpha`` and ``cv_srocc`` (per alpha, over per-group mean predictions).
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(targets, np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise InputError(f"features {x.shape} and targets {y.shape} do not pair up")
    if not alphas or min(alphas) <= 0:
        raise InputError(f"ridge alphas must be positive, got {list(alphas)}")
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    unique = np.unique(groups)
    if len(unique) < 2 * folds:
        raise InputError(f"{len(unique)} images are too few for {folds}-fold cross-validation")
    fold_of = dict(zip(unique, np.random.default_rng(seed).permutation(len(unique)) % folds))
    fold = np.array([fold_of[g] for g in groups])
    predictions = np.zeros((len(alphas), len(y)))
    for k in range(folds):
        tr, te = fold != k, fold == k
        mean, std = x[tr].mean(0), x[tr].std(0) + 1e-8
        xt = (x[tr] - mean) / std
        for a, w in enumerate(_ridge(xt, y[tr] - y[tr].mean(), alphas)):
            predictions[a, te] = ((x[te] - mean) / std) @ w + y[tr].mean()
    cv = []
    for a in range(len(alphas)):
        per_group = [predictions[a, groups == g].mean() for g in unique]
        per_target = [y[groups == g].mean() for g in unique]
        cv.append(float(stats.spearmanr(per_group, per_target)[0]))
    best = int(np.argmax(cv))
    mean, std = x.mean(0), x.std(0) + 1e-8
    (weights,) = _ridge((x - mean) / std, y - y.mean(), [alphas[best]])
    return {"mean": mean, "std": std, "weights": weights, "bias": float(y.mean()),
            "alpha": float(alphas[best]), "cv_srocc": dict(zip(map(float, alphas), cv))}


def head_values(fit, head_variables):
    """``{variable name: array}`` that makes the head compute the ridge fit.

    Args:
      fit: `fit_ridge`'s result.
      head_variables: ``{name suffix: tf.Variable}`` for ``weights``, ``biases`` and, when the
        head normalises its input, ``moving_mean``, ``moving_variance`` and ``beta``.
    """
    mean, std, w = fit["mean"], fit["std"], fit["weights"]
    values = {}
    if "moving_mean" in head_variables:
        # the head's batch norm standardises with these exactly (inference mode)
        values["moving_mean"] = mean
        values["moving_variance"] = np.maximum(std ** 2 - BN_EPSILON, 1e-8)
        values["beta"] = np.zeros_like(mean)
        kernel, bias = w, fit["bias"]
    else:  # fold the standardisation into the linear layer
        kernel = w / std
        bias = fit["bias"] - float(np.dot(kernel, mean))
    shape = head_variables["weights"].shape.as_list()
    values["weights"] = kernel.reshape(shape)
    values["biases"] = np.array([bias])
    return {head_variables[k].op.name: v.astype(np.float32) for k, v in values.items()}


def build_probe_init(scorer, paths, targets, head_variables, transfer, views, seed, log,
                     report_path):
    """``init_fn(session)``: the head fitted by ridge on the frozen network's pooled features of
    `views` of each training image (one ridge row per view), then written into the head.

    Runs after the start is restored, so the features are those fine-tuning begins from.

    Args:
      scorer: a `rankiqa.scoring.Scorer` branch of the training graph with ``features``.
      paths, targets: the training images and their scores.
      head_variables: the head's model variables (``weights``, ``biases``, and the batch-norm
        ones of a normalising head).
      transfer: `rankiqa.config.TransferConfig` (alphas, folds).
      views: `rankiqa.data.views.Views` of each image.
      report_path: where probe.json goes (None: nowhere, as in a job's non-chief workers).

    Raises:
      InputError: the network exposes no pooled features, or its head is not linear.
    """
    if scorer.features is None:
        raise InputError(f"finetune.probe needs a network that exposes its pooled features; "
                         f"{scorer.net_name} does not")
    head = {v.op.name.rsplit("/", 1)[-1]: v for v in head_variables}
    if not {"weights", "biases"} <= set(head):
        raise InputError(f"finetune.probe needs a linear head; found "
                         f"{sorted(v.op.name for v in head.values())}")

    def init_fn(sess):
        log(f"probe: pooled features of {len(paths)} training images x {views.count} views")
        # decoded a chunk at a time (5,400 photos x 2 views at 224² would hold 1.6 GB); whole
        # session-run batches per chunk, so the batches are those of one pass over all crops
        chunk, x = scorer.batch_size, []
        bar = Progress("probe: features of", len(paths), lambda line, end: log(line))
        for i in range(0, len(paths), chunk):
            stack = views.stack(paths[i:i + chunk], seeds=range(i, i + chunk))
            x.append(scorer.run(scorer.features, stack.reshape(-1, *stack.shape[2:]), sess))
            bar.update(min(i + chunk, len(paths)))
        x = np.concatenate(x)
        y = np.repeat(targets, views.count)
        fit = fit_ridge(x, y, transfer.probe_alphas, transfer.probe_folds, seed=seed,
                        groups=np.repeat(np.arange(len(paths)), views.count))
        by_name = {v.op.name: v for v in head.values()}
        weights.assign([(by_name[name], value) for name, value in head_values(fit, head).items()],
                       sess)
        cv = ", ".join(f"{a:g}: {s:.4f}" for a, s in fit["cv_srocc"].items())
        log(f"probe: ridge alpha {fit['alpha']:g} on {x.shape[1]} features "
            f"(cross-validated srocc by alpha {cv})")
        if report_path:
            rundir.write_json_atomic(report_path, {
                "alpha": fit["alpha"], "cv_srocc": fit["cv_srocc"],
                "features": int(x.shape[1]), "images": len(paths), "crops": views.count,
                "views": views.as_dict()})

    return init_fn
