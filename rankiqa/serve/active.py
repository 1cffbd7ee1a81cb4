"""Which photos to send to raters next (active labelling): `rankiqa suggest-labels`.

Opinion scores cost a lab study; a model's features and its own doubts are free. Each strategy
ranks a pool of unlabelled photos, best first, with the reason for each:

  random       a seeded draw: the baseline every other strategy must beat;
  uncertainty  the photos whose score the model is least sure of: the spread of its score
               across a photo's views (RankIQA's authors use ranking uncertainty this way);
  diversity    greedy k-centre on the pooled features (each standardised over the pool and the
               labelled photos): each pick the photo farthest from every labelled and already
               picked photo, so that the labels cover the collection;
  combined     k-centre whose distances are weighted by the uncertainty's rank (0.5x for the
               surest photo to 1.5x for the least sure);
  typical      TypiClust (Hacohen, Dekel and Weinshall, ICML 2022), made for small budgets:
               the pool and the labelled photos in as many k-means clusters as photos will be
               labelled, then the most typical photo (the densest: nearest its neighbours) of
               each of the largest clusters that hold no labelled photo yet.

`scripts/studies/label_efficiency.py` measures them by simulation on BIQ2021 (docs/label-efficiency.md);
`DEFAULT` is the measured best. NumPy only.
"""

import os

import numpy as np

from rankiqa.data import mos
from rankiqa.data import images as images_lib
from rankiqa.errors import InputError

STRATEGIES = ("random", "uncertainty", "diversity", "combined", "typical")
DEFAULT = "typical"  # the measured best: docs/label-efficiency.md


def rank_weights(values):
    """0.5 for the smallest of `values` to 1.5 for the largest, by rank."""
    order = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return order / max(len(values) - 1, 1) + 0.5


def k_centre(features, labelled, count, weights=None, exclude=()):
    """Greedy k-centre: indices of `count` rows of `features` ``[n, d]`` (never one of
    `exclude`), each the row farthest (times its weight) from the rows of `labelled`
    ``[m, d]`` and the rows picked before it, with that distance. With nothing labelled, the
    first pick is the row nearest the mean: the most typical photo, then outwards. Exact
    duplicates are picked too, at distance 0, once the distinct rows are used up."""
    x = np.asarray(features, np.float64)
    count = min(count, len(x) - len(set(exclude)))
    weights = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    if len(labelled):
        nearest = np.full(len(x), np.inf)
        for start in range(0, len(labelled), 1024):  # bounded memory for large labelled sets
            block = np.asarray(labelled[start:start + 1024], np.float64)
            nearest = np.minimum(nearest, _distances(x, block).min(1))
    else:
        nearest = None
    picks, reach = [], []
    for _ in range(count):
        taken = np.isin(np.arange(len(x)), [*exclude, *picks])
        if nearest is None:
            central = _distances(x, x.mean(0, keepdims=True))[:, 0]
            k = int(np.argmin(np.where(taken, np.inf, central)))
            nearest, distance = np.full(len(x), np.inf), 0.0
        else:
            score = np.where(taken, -np.inf, nearest * weights)
            k = int(np.argmax(score))
            distance = float(nearest[k])
        picks.append(k)
        reach.append(distance)
        nearest = np.minimum(nearest, _distances(x, x[k:k + 1])[:, 0])
    return picks, reach


def principal_components(x, dims, seed=0):
    """``x`` ``[n, d]`` (centred here) on its first `dims` principal components, by a
    randomised range finder (Halko et al., 2011): seconds where a full SVD of thousands of
    4,240-feature rows takes minutes."""
    x = x - x.mean(0)
    dims = min(dims, *x.shape)
    basis = x @ np.random.default_rng(seed).normal(size=(x.shape[1], dims + 10))
    for _ in range(2):  # power iterations sharpen the leading directions
        basis, _ = np.linalg.qr(x @ (x.T @ basis))
    _, _, vt = np.linalg.svd(basis.T @ x, full_matrices=False)
    return x @ vt[:dims].T


def k_means(x, clusters, seed=0, iterations=20):
    """Labels ``[n]`` of Lloyd's k-means on ``x`` ``[n, d]``, seeded by k-means++."""
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    nearest = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, clusters):
        k = rng.choice(len(x), p=nearest / nearest.sum()) if nearest.sum() > 0 else \
            rng.integers(len(x))
        centres.append(x[k])
        nearest = np.minimum(nearest, ((x - x[k]) ** 2).sum(1))
    centres = np.array(centres)
    for _ in range(iterations):
        labels = _distances(x, centres).argmin(1)
        moved = np.array([x[labels == c].mean(0) if np.any(labels == c) else centres[c]
                          for c in range(clusters)])
        if np.allclose(moved, centres):
            break
        centres = moved
    return _distances(x, centres).argmin(1)


def typical(features, labelled, count, seed=0, dims=64, neighbours=20):
    """TypiClust's picks: indices of `count` rows of `features` ``[n, d]``, each the most
    typical (densest: the least mean distance to its nearest neighbours) of its cluster, and
    each one's (cluster size, whether the cluster holds a labelled photo); size 0 for a pick
    that fills a gap by k-centre."""
    both = principal_components(np.concatenate([features, labelled]), dims, seed)
    labels = k_means(both, min(len(labelled) + count, len(both)), seed)
    pool_labels, covered = labels[:len(features)], set(labels[len(features):])
    sizes = np.bincount(pool_labels, minlength=labels.max() + 1)
    # the largest clusters without a labelled photo first, then the rest by size
    order = sorted(range(len(sizes)), key=lambda c: (c in covered, -sizes[c]))
    picks, clusters = [], []
    for cluster in order:
        if len(picks) == count or sizes[cluster] == 0:
            break
        members = np.flatnonzero(pool_labels == cluster)
        near = np.sort(_distances(both[members], both[members]), axis=1)[:, 1:neighbours + 1]
        density = 1.0 / (near.mean(1) + 1e-12) if near.shape[1] else np.ones(len(members))
        picks.append(int(members[np.argmax(density)]))
        clusters.append((len(members), cluster in covered))
    if len(picks) < count:  # fewer clusters than photos wanted: fill by k-centre
        rest = k_centre(features, np.concatenate([labelled, features[picks]]),
                        count - len(picks), exclude=picks)[0]
        picks += rest
        clusters += [(0, False)] * len(rest)
    return picks, clusters


def _distances(a, b):
    """Euclidean distances ``[len(a), len(b)]``."""
    squared = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return np.sqrt(np.maximum(squared, 0.0))


def choose(strategy, count, size, features=None, labelled=None, spread=None, seed=0):
    """The pool's `count` photos to label next, best first, with a reason each.

    Args:
      strategy: one of `STRATEGIES`.
      size: the pool's photo count.
      features: ``[pool, d]`` pooled features of the pool's photos (diversity, combined).
      labelled: ``[labelled, d]`` the labelled photos' features (may be empty).
      spread: ``[pool]`` each photo's score spread across its views (uncertainty, combined).

    Returns:
      [(pool index, reason)].
    """
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}; choose from {list(STRATEGIES)}")
    count = min(count, size)
    if strategy == "random":
        return [(int(k), f"random draw (seed {seed})")
                for k in np.random.default_rng(seed).permutation(size)[:count]]
    if strategy in ("uncertainty", "combined") and not np.any(np.asarray(spread) > 0):
        # ranking by a spread of 0 everywhere would be ranking by file name
        raise InputError(f"--strategy {strategy}: the model's views agree on every photo "
                         "(score spread 0: a model with one view, or photos no larger than "
                         "its crop), so it cannot say which it is least sure of; use "
                         "--strategy typical or diversity")
    if strategy == "uncertainty":
        order = np.argsort(-np.asarray(spread), kind="stable")[:count]
        return [(int(k), f"score spread {spread[k]:.4f} across its views") for k in order]
    features = np.asarray(features, np.float64)
    labelled = (np.zeros((0, features.shape[1])) if labelled is None
                else np.asarray(labelled, np.float64))
    # standardised: raw pooled features mix blocks whose scales differ by orders of magnitude
    both = np.concatenate([features, labelled])
    mean, std = both.mean(0), both.std(0) + 1e-8
    if strategy == "typical":
        picks, clusters = typical((features - mean) / std, (labelled - mean) / std, count,
                                  seed)
        return [(k, _typical_reason(n, covered)) for k, (n, covered) in zip(picks, clusters)]
    weights = rank_weights(spread) if strategy == "combined" else None
    picks, reach = k_centre((features - mean) / std, (labelled - mean) / std, count, weights)
    reasons = []
    for k, distance in zip(picks, reach):
        text = (f"feature distance {distance:.3g} to the nearest labelled or chosen photo"
                if np.isfinite(distance) and distance > 0 else "the most typical photo (nothing "
                "labelled yet)")
        if strategy == "combined":
            text += f"; score spread {spread[k]:.4f}"
        reasons.append((k, text))
    return reasons


def _typical_reason(size, covered):
    if not size:
        return "fills a gap: farthest from every labelled and chosen photo"
    where = "a labelled photo's cluster" if covered else "a cluster with no labelled photo"
    if size == 1:
        return f"alone in {where}"
    return f"the most typical of {size} unlabelled photos in {where}"


def labelled_paths(label_file, path_column=""):
    """The photos a label CSV already labels, resolved: only its path column is read (any of
    the spellings `rankiqa finetune` reads, relative to its folder), so labels on any scale,
    or a file of paths alone, will do (`rankiqa.data.mos.listed_paths`)."""
    return [os.path.realpath(p) for p in mos.listed_paths(label_file, path_column)]


def unlabelled_pool(paths, labelled, label_file):
    """(the photos under `paths` that `labelled` (real paths) does not hold, each once however
    it is spelled; problems naming the labelled ones and what cannot be listed)."""
    files, problems = images_lib.list_files(paths)
    known, pool, seen, done = set(labelled), [], set(), set()
    for path in files:
        real = os.path.realpath(path)
        if real in known:
            done.add(real)
        elif real not in seen:  # one photo under two spellings is one photo
            seen.add(real)
            pool.append(path)
    if done:  # one line, not one per labelled photo
        problems.append(f"{len(done)} photo{'' if len(done) == 1 else 's'} already "
                        f"labelled in {label_file}")
    if not pool:
        found = f"{len(files)} photos found under the paths given"
        if not files:
            raise InputError("no unlabelled photo to choose from: no photo found under the "
                             "paths given")
        raise InputError(f"no unlabelled photo to choose from: {found}, {len(done)} of them "
                         f"labelled{f' in {label_file}' if label_file else ''}")
    return pool, problems


def features_of_labelled(scorer, labelled, dims, log):
    """The labelled photos' pooled features ``[n, dims]`` (the mean over their views), those
    that exist; a missing one is counted in a notice."""
    inside = [p for p in labelled if os.path.isfile(p)]
    if len(inside) < len(labelled):
        log(f"notice: {len(labelled) - len(inside)} labelled photos are missing; diversity is "
            "measured against the others")
    if not inside:
        return np.zeros((0, dims))
    return scorer.values(inside, tensor="features").mean(1)


def suggest(paths, label_file=None, model=None, count=25, strategy=DEFAULT, seed=0,
            device="auto", log=print, progress=None, labelled=None):
    """The photos under `paths` (files and folders) that `label_file` does not label, ranked
    for labelling by `strategy`, the first `count` of them.

    Args:
      model: the model whose views, scores and pooled features judge the photos (a built-in
        model's name, default `rankiqa.weights.builtin.DEFAULT`, or a training folder).
      progress: optional ``progress(done, total)`` as photos are scored.
      labelled: the labelled photos' real paths, where read already (`labelled_paths`).

    Returns:
      (rows ``[{"rank", "path", "reason"}]``, problems ``[message]`` for photos left out:
      unreadable files, and photos of `paths` that `label_file` already labels).

    Raises:
      InputError: nothing left to choose from, or a strategy the model cannot serve.
    """
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}; choose from {list(STRATEGIES)}")
    if labelled is None:
        labelled = labelled_paths(label_file) if label_file else []
    pool, problems = unlabelled_pool(paths, labelled, label_file)
    if len(pool) < count:
        log(f"notice: the pool holds {len(pool)} unlabelled photos, fewer than --count "
            f"{count}: all of them are ranked")
    from rankiqa.serve import scoring  # TensorFlow starts here

    needs_features = strategy in ("diversity", "combined", "typical")
    with scoring.load_scorer(model, device=device, normalised=True) as scorer:
        if needs_features and scorer.features is None:
            raise InputError(f"--strategy {strategy} needs a model with pooled features; "
                             f"{scorer.model.ref} has none (use --strategy uncertainty "
                             "or random)")
        tensor = "features" if needs_features else "score"
        readable, values = [], []  # one pass reads every photo once: its features or scores
        for k, value in scorer.iter_scores(pool, tensor=tensor, progress=progress):
            if isinstance(value, images_lib.BadImageError):
                problems.append(str(value))
            else:
                readable.append(pool[k])
                values.append(value)
        if not readable:
            raise InputError(f"none of the {len(pool)} unlabelled photos could be read")
        spread = features = labelled_features = None
        if strategy in ("uncertainty", "combined"):  # the spread of a photo's view scores
            per_view = np.stack(values) if tensor == "score" else scorer.values(readable)
            spread = per_view.std(1)
        if needs_features:
            features = np.stack(values).mean(1)  # a photo's features: the mean over its views
            labelled_features = features_of_labelled(scorer, labelled, features.shape[1], log)
    picks = choose(strategy, count, len(readable), features=features, labelled=labelled_features,
                   spread=spread, seed=seed)
    rows = [{"rank": n, "path": readable[k], "reason": reason}
            for n, (k, reason) in enumerate(picks, start=1)]
    return rows, problems
