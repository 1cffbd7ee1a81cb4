"""`rankiqa make-rank-data`: reference photos -> distorted copies and a rank list.

Each reference is written once as level 0 and once per (family, level 1..5). Work is split by
reference over worker processes; each (reference, family) draws its noise from its own generator
seeded by (seed, reference, family), so the output does not depend on the number of workers or
their order. Output goes to a temporary sibling folder that is renamed into place only when
complete: an interrupted run never leaves a folder that looks finished.
"""

import json
import multiprocessing
import os
import re
import zlib

import numpy as np
from PIL import Image

from rankiqa.run import rundir
from rankiqa.data import distortions as distortions_lib
from rankiqa.data import lists
from rankiqa.data import images as images_lib
from rankiqa.data.images import BadImageError
from rankiqa.errors import InputError

# PNG is lossless, so JPEG/JP2K artefacts survive; level 1 of 9 costs ~3x less time than 6
# for ~15% larger files.
PNG_COMPRESS_LEVEL = 1


def find_inputs(src_dir):
    """(paths, problems): every non-hidden regular file under `src_dir`, recursively, sorted,
    and a message for each other entry (a FIFO, a device: never opened); or, if `src_dir` is
    a text file, the paths it lists (one per line, relative to the file's folder)."""
    if os.path.isfile(src_dir):
        return images_lib.read_path_list(src_dir), []
    if not os.path.isdir(src_dir):
        raise FileNotFoundError(f"SRC_DIR {src_dir} is neither a folder nor a list file")
    files, problems = images_lib.list_files([src_dir])
    return sorted(files), problems


def _reference_names(paths):
    """Stable, unique, filesystem-safe names from file stems."""
    names, seen = [], {}
    for p in paths:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(os.path.basename(p))[0]) or "img"
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        names.append(stem if count == 0 else f"{stem}_{count}")
    return names


def _rng(seed, reference, family):
    return np.random.default_rng([seed, zlib.crc32(reference.encode()), zlib.crc32(family.encode())])


def _process_family(job):
    """Worker: one family of one reference -> its files and rank rows (its own random stream,
    `_rng`, so the bytes do not depend on which worker made them). The reference's first
    family also writes the pristine copy. Returns (rows, skipped: bool, error)."""
    path, name, out_root, family, first, seed, max_side, max_pixels = job
    images_lib.set_max_pixels(max_pixels)  # a spawned worker starts with the default
    try:
        image = images_lib.load_image(path, max_side)
    except BadImageError as e:
        return [], False, str(e)
    if min(image.shape[:2]) < 8:
        return [], False, f"{path}: too small ({image.shape[1]}x{image.shape[0]})"
    os.makedirs(os.path.join(out_root, "images", name), exist_ok=True)
    pristine = f"images/{name}/{name}.png"
    if first:
        Image.fromarray(image).save(os.path.join(out_root, pristine),
                                    compress_level=PNG_COMPRESS_LEVEL)
    rng = _rng(seed, name, family)
    _, values = distortions_lib.get_distortion(family)
    levels = [distortions_lib.distort(image, family, k, rng) for k in range(1, len(values) + 1)]
    if np.array_equal(levels[-1], image):
        # e.g. desaturating a grey photo: every level equals level 0, so no ranking exists.
        return [], True, None
    rows = [(name, family, 0, pristine)]
    for k, distorted in enumerate(levels, start=1):
        rel = f"images/{name}/{name}_{family}_{k}.png"
        Image.fromarray(distorted).save(os.path.join(out_root, rel),
                                        compress_level=PNG_COMPRESS_LEVEL)
        rows.append((name, family, k, rel))
    return rows, False, None


def _per_reference(results, families):
    """The per-family results regrouped per reference, in order: (rows, skipped families,
    error)."""
    results = iter(results)
    while True:
        chunk = [next(results, None) for _ in families]
        if chunk[0] is None:
            return
        error = next((e for _, _, e in chunk if e), None)
        yield ([r for rows, _, _ in chunk for r in rows],
               [f for f, (_, skipped, _) in zip(families, chunk) if skipped], error)


def _collect(jobs, results, skip_bad, progress):
    """(rank-list rows, bad-file messages, ``{family: [references it skipped]}``) from the
    workers' results, in job order; an unreadable reference refuses the run unless
    `skip_bad`."""
    rows, bad, skipped_families = [], [], {}
    for done, (job, (ref_rows, skipped, error)) in enumerate(zip(jobs, results), start=1):
        if error:
            if not skip_bad:
                raise BadImageError(f"{error}; pass --skip-bad to skip such files")
            bad.append(error)
        rows.extend(ref_rows)
        for family in skipped:
            skipped_families.setdefault(family, []).append(job[1])
        if progress:
            progress(done, len(jobs), job[0])
    return rows, bad, skipped_families


def reference_sources(rank_list):
    """``{reference name: real path of its source photo}`` of the rank data `rank_list`
    belongs to, from its manifest.json (the names `make_rank_data` gave its sources).

    Raises:
      InputError: no manifest beside the list, or its source list is gone or changed.
    """
    folder = os.path.dirname(os.path.abspath(rank_list))
    path = os.path.join(folder, "manifest.json")
    if not os.path.isfile(path):
        raise InputError(f"{rank_list}: no manifest.json beside it names its references' source "
                         "photos (make-rank-data writes one)")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if "sources" in manifest:
        return {name: os.path.realpath(p) for name, p in manifest["sources"].items()}
    # rank data made before the manifest listed its sources: the names again from the source
    try:
        paths, _ = find_inputs(manifest["source"])
    except (KeyError, FileNotFoundError) as e:
        raise InputError(f"{path}: its source list cannot be read again ({e}); the references' "
                         "photos are unknown") from None
    return {name: os.path.realpath(p) for name, p in zip(_reference_names(paths), paths)}


def make_rank_data(src_dir, out_dir, families=distortions_lib.LIVE_DISTORTIONS, seed=0, workers=1,
                   max_side=0, skip_bad=False, force=False, progress=None):
    """Generates ranking data from the photos in `src_dir` into `out_dir`.

    Args:
      src_dir: folder of reference photos (searched recursively; every file must be an image
        unless `skip_bad`), or a text file listing them one per line.
      out_dir: output folder; it must not exist unless `force`.
      families: distortion family names (keys of `distortions.DISTORTIONS`).
      seed: noise seed; the same seed gives byte-identical images.
      workers: worker processes.
      max_side: shrink references whose longer side exceeds this (0: keep).
      skip_bad: skip and count unreadable files instead of failing.
      force: replace an existing `out_dir`.
      progress: optional callable(done, total, reference_path) called after each reference.

    Returns:
      dict summary: references, groups, images, skipped (list of messages), rank_list path.

    Raises:
      FileNotFoundError, FileExistsError, InputError (unknown family), BadImageError.
    """
    _check_request(families, workers)
    paths, unreadable = find_inputs(src_dir)
    if unreadable and not skip_bad:
        raise BadImageError(f"{unreadable[0]}; pass --skip-bad to skip such files")
    if not paths:
        raise FileNotFoundError(f"SRC_DIR {src_dir} holds no files")
    out_dir = os.path.abspath(out_dir)
    rundir.check_output(out_dir, [src_dir] + paths, force, "OUT_DIR")
    names = _reference_names(paths)
    with rundir.writing(out_dir) as partial:  # a half-written folder is never taken for one
        os.makedirs(partial)
        # one job per reference and family: many small jobs keep every worker busy to the end
        jobs = [(p, n, partial, f, k == 0, seed, max_side, images_lib.MAX_PIXELS)
                for p, n in zip(paths, names) for k, f in enumerate(families)]
        if progress:
            progress(0, len(paths))
        results = _per_reference(_run_jobs(jobs, workers), families)
        rows, bad, skipped_families = _collect(list(zip(paths, names)), results, skip_bad,
                                               progress)
        bad = unreadable + bad
        if not rows:
            raise BadImageError(f"SRC_DIR {src_dir}: no usable reference image")
        lists.write_rank_list(os.path.join(partial, lists.RANK_LIST_NAME), rows)
        counts, sources = _counts(rows, paths, names)
        summary = {"source": os.path.abspath(src_dir), "seed": seed, "families": list(families),
                   "max_side": max_side, **counts, "skipped_files": bad,
                   "skipped_families": skipped_families, "sources": sources}
        with open(os.path.join(partial, "manifest.json"), "w") as f:
            json.dump(summary, f, indent=2)
    summary["rank_list"] = os.path.join(out_dir, lists.RANK_LIST_NAME)
    return summary


def _check_request(families, workers):
    """Refuses unknown or no distortion families and a worker count below one, before any
    photo is read."""
    for family in families:
        distortions_lib.get_distortion(family)
    if not families:
        raise InputError("no distortion families given")
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")


def _counts(rows, paths, names):
    """(the manifest's counts of references, groups and images; its ``sources``: which photo
    each reference is, `reference_sources`: a teacher must not score a distorted copy of a
    photo with a head fitted on that photo)."""
    used = {r[0] for r in rows}
    return ({"references": len(used), "groups": len({(r[0], r[1]) for r in rows}),
             "images": len({r[3] for r in rows})},
            {n: os.path.abspath(p) for p, n in zip(paths, names) if n in used})


def _run_jobs(jobs, workers):
    """Yields results in job order; with workers > 1 they come from a process pool."""
    if workers == 1:
        for job in jobs:
            yield _process_family(job)
        return
    # Largest references first: the pool then ends on small jobs instead of one big straggler
    # (longest-processing-time scheduling); results are put back in job order.
    order = sorted(range(len(jobs)), key=lambda k: -_pixels(jobs[k][0]))
    done, next_out = {}, 0
    # spawn, not fork: the parent may hold TensorFlow's threads, which fork does not copy safely.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for k, result in zip(order, pool.imap(_process_family, [jobs[k] for k in order])):
            done[k] = result
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1


def _pixels(path):
    """Image area from the header alone (0 for unreadable files: they fail fast anyway)."""
    try:
        w, h = images_lib.image_size(path)
    except BadImageError:
        w = h = 0  # they fail fast anyway
    return w * h
