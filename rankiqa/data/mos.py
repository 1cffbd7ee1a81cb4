"""MOS lists: one reader per IQA dataset's label file, and seeded splits.

Every reader returns `ScoredImage`s whose ``score`` is normalised to [0, 1] with **higher meaning
better** on every dataset: DMOS (a *difference* score, lower is better) is flipped. ``raw`` keeps
the file's own value. Where a dataset is built from reference images, each item names its
``reference``, so splits can keep all versions of one content on one side.

A malformed label line raises `ListError` naming the file and the line; a missing image names
the image. File names with spaces and parentheses (BIQ2021) are read as they are.
"""

import csv
import dataclasses
import functools
import hashlib
import math
import os
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from rankiqa.data.lists import ListError, missing, open_text
from rankiqa.errors import InputError


@dataclass(frozen=True)
class ScoredImage:
    path: str
    score: float  # normalised: 0 worst .. 1 best
    raw: float  # the label file's value
    reference: Optional[str] = None
    distortion: Optional[str] = None
    listed: Optional[str] = None  # the name as the label file gives it (reports show it so)
    group: Optional[str] = None  # the kind of photo (BIQ2021's ss01-ss03): figures per group


@dataclass(frozen=True)
class DatasetSpec:
    """A label format: its reader, its score range and direction."""

    # reader(label_file, image_root) -> [(rel_path, raw, reference, distortion[, group])]
    reader: object
    low: float
    high: float
    higher_is_better: bool
    default_image_root: str = ""  # relative to the label file's folder
    note: str = ""
    check_range: bool = True  # scores outside [low, high] mean the wrong file or dataset key


def _fail(path, line_no, message):
    raise ListError(f"{path}:{line_no}: {message}")


def _float(text, path, line_no, what="score"):
    try:
        value = float(text)
    except (TypeError, ValueError):
        _fail(path, line_no, f"{what} {text!r} is not a number")
    if not np.isfinite(value):
        _fail(path, line_no, f"{what} {text!r} is not finite")
    return value


def _csv_rows(path, required, hint=""):
    """Yields (line_no, row dict) with header names lower-cased and stripped; a missing column
    names what it looked for, then `hint`."""
    with open_text(path) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ListError(f"{path}: empty file")
        names = [h.strip().lower() for h in header]
        for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
            if len(header) == 1 and sep in header[0]:  # naming columns would not help
                raise ListError(f"{path}:1: the columns are separated by {name}, not commas "
                                f"(header {header[0]!r}); save it as comma-separated CSV")
        twice = sorted({n for n in names if n and names.count(n) > 1})
        if twice:  # one of them would win silently: which one the user meant is unknown
            raise ListError(f"{path}:1: the header names {twice[0]!r} twice (column names are "
                            f"read in any case: {header}); rename or remove one")
        for options in required:
            if not any(o in names for o in options):
                raise ListError(f"{path}:1: header needs a column {' or '.join(options)!s}, "
                                f"got {header}{hint}")
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(names):
                _fail(path, line_no, f"expected {len(names)} fields, got {len(row)}: {row!r}")
            yield line_no, dict(zip(names, (c.strip() for c in row)))


def _pick(row, options):
    for o in options:
        if o in row:
            return row[o]
    return None


# the generic CSV's columns by their common spellings, first match wins (data.path_column and
# data.score_column name others)
PATH_COLUMNS = ("path", "image", "image_name", "image name", "filename", "file", "name")
SCORE_COLUMNS = ("score", "mos", "dmos", "rating", "quality")


# a label file's column naming each photo's kind (figures are given per group where it has one)
GROUP_COLUMNS = ("group", "kind", "subset")


def read_generic_csv(path, image_root, path_column="", score_column=""):
    """``path,score`` (optional ``reference``, ``distortion`` and ``group`` columns); the image
    and score columns may carry any spelling of `PATH_COLUMNS` / `SCORE_COLUMNS` (``image,mos``),
    or the names `path_column` / `score_column` give; the group any of `GROUP_COLUMNS`."""
    paths = (path_column.strip().lower(),) if path_column else PATH_COLUMNS
    scores = (score_column.strip().lower(),) if score_column else SCORE_COLUMNS
    hint = ("; name the columns with data.path_column and data.score_column (e.g. --set "
            "data.path_column=file --set data.score_column=rating)")
    for line_no, row in _csv_rows(path, [paths, scores], hint):
        yield (_pick(row, paths), _float(_pick(row, scores), path, line_no),
               row.get("reference") or None, row.get("distortion") or None,
               _pick(row, GROUP_COLUMNS) or None)


def biq2021_kind(name):
    """The kind of photo a BIQ2021 file name names (``ss01 (273).jpg`` -> ``ss01``): ss01 a
    personal gallery, ss02 photos taken with ISO, shutter, focus and light varied, ss03
    Unsplash; None for another name."""
    match = re.match(r"(ss\d\d)\b", os.path.basename(name))
    return match.group(1) if match else None


def read_biq2021(path, image_root):
    """``Image Name,MOS`` (the official file) or ``image,mos``; MOS in [0, 1]. Each photo's
    group is its kind, from its name (`biq2021_kind`)."""
    names = ("image name", "image", "image_name")
    for line_no, row in _csv_rows(path, [names, ("mos",)]):
        name = _pick(row, names)
        yield name, _float(row["mos"], path, line_no), None, None, biq2021_kind(name)


def read_koniq10k(path, image_root):
    """``koniq10k_scores_and_distributions.csv``: image_name, ..., MOS (1-5), SD, MOS_zscore."""
    for line_no, row in _csv_rows(path, [("image_name",), ("mos",)]):
        yield row["image_name"], _float(row["mos"], path, line_no), None, None


def read_kadid10k(path, image_root):
    """``dmos.csv``: dist_img,ref_img,dmos,var. Despite its name the value is a 1-5 rating
    where 5 is best (a degradation category rating), so it is *not* flipped."""
    for line_no, row in _csv_rows(path, [("dist_img",), ("ref_img",), ("dmos",)]):
        parts = row["dist_img"].split("_")
        distortion = parts[1] if len(parts) >= 3 else None
        yield (row["dist_img"], _float(row["dmos"], path, line_no),
               os.path.splitext(row["ref_img"])[0], distortion)


def read_csiq(path, image_root):
    """CSIQ's DMOS sheet exported to CSV: image, dst_type, dst_lev, dmos (0-1, lower better);
    images at ``dst_imgs/<dst_type>/<image>.<DST_TYPE>.<dst_lev>.png``."""
    for line_no, row in _csv_rows(path, [("image",), ("dst_type",), ("dst_lev",), ("dmos",)]):
        kind, level = row["dst_type"], row["dst_lev"]
        folder = kind.lower().replace(" ", "")
        abbreviation = {"noise": "AWGN", "jpeg": "JPEG", "jpeg 2000": "jpeg2000",
                        "fnoise": "fnoise", "blur": "BLUR", "contrast": "contrast"}.get(
                            kind.lower(), kind)
        rel = f"{folder}/{row['image']}.{abbreviation}.{level}.png"
        yield rel, _float(row["dmos"], path, line_no), row["image"], folder


_TID_NAME = re.compile(r"^[iI](\d\d)_(\d\d)_(\d)\.(bmp|BMP)$")


def read_tid2013(path, image_root):
    """``mos_with_names.txt``: ``MOS name`` per line (MOS 0-9, higher better); names
    ``iRR_DD_L.bmp`` give reference RR, distortion DD and level L."""
    with open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                _fail(path, line_no, f"expected 'MOS name', got {line.strip()!r}")
            value = _float(parts[0], path, line_no, "MOS")
            match = _TID_NAME.match(parts[1])
            if not match:
                _fail(path, line_no, f"image name {parts[1]!r} is not iRR_DD_L.bmp")
            yield parts[1], value, f"i{match.group(1)}", match.group(2)


LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def read_live(path, image_root):
    """LIVE release 2: ``dmos.mat`` (dmos, orgs) beside ``refnames_all.mat``; 982 images in
    jp2k/, jpeg/, wn/, gblur/, fastfading/ (img1.bmp ...), in that order. Reference copies
    (orgs == 1) are left out. DMOS 0-100, lower better."""
    from scipy import io as sio

    folder = os.path.dirname(path)
    try:
        dmos_mat = sio.loadmat(path)
        refs = sio.loadmat(os.path.join(folder, "refnames_all.mat"))["refnames_all"].ravel()
        dmos, orgs = dmos_mat["dmos"].ravel(), dmos_mat["orgs"].ravel()
    except (OSError, KeyError, ValueError) as e:
        raise ListError(f"{path}: not a LIVE release 2 dmos.mat with refnames_all.mat beside it "
                        f"({e})") from None
    expected = sum(n for _, n in LIVE_FOLDERS)
    if not len(dmos) == len(orgs) == len(refs) == expected:
        raise ListError(f"{path}: expected {expected} entries, got dmos {len(dmos)}, "
                        f"orgs {len(orgs)}, refnames {len(refs)}")
    k = 0
    for kind, count in LIVE_FOLDERS:
        for i in range(1, count + 1):
            if not orgs[k]:
                ref = str(np.asarray(refs[k]).ravel()[0])
                yield f"{kind}/img{i}.bmp", float(dmos[k]), os.path.splitext(ref)[0], kind
            k += 1


datasets_map = {
    "live": DatasetSpec(read_live, 0.0, 100.0, False, "", "dmos.mat, DMOS 0-100"),
    "tid2013": DatasetSpec(read_tid2013, 0.0, 9.0, True, "distorted_images", "MOS 0-9"),
    "csiq": DatasetSpec(read_csiq, 0.0, 1.0, False, "dst_imgs", "DMOS 0-1"),
    "kadid10k": DatasetSpec(read_kadid10k, 1.0, 5.0, True, "images", "1-5, higher better"),
    "koniq10k": DatasetSpec(read_koniq10k, 1.0, 5.0, True, "1024x768", "MOS 1-5"),
    "biq2021": DatasetSpec(read_biq2021, 0.0, 1.0, True, "images", "MOS 0-1"),
    # scores on another scale (1-5, 0-100, DMOS): data.score_range and data.higher_is_better
    "csv": DatasetSpec(read_generic_csv, 0.0, 1.0, True, "", "0-1, higher better, unless "
                       "data.score_range and data.higher_is_better say otherwise"),
}


def get_dataset_spec(kind, score_range=None, higher_is_better=None, path_column="",
                     score_column=""):
    """The spec of dataset `kind`, its scale replaced by `score_range` ``(low, high)`` and its
    direction by `higher_is_better` where given (``data.score_range``,
    ``data.higher_is_better``)."""
    if kind not in datasets_map:
        raise InputError(f"unknown dataset {kind!r}; choose from {sorted(datasets_map)}")
    spec = datasets_map[kind]
    if path_column or score_column:
        if kind != "csv":
            raise InputError("data.path_column and data.score_column are for data.dataset=csv "
                             f"(a {kind} label file has its own columns)")
        spec = dataclasses.replace(spec, reader=functools.partial(
            read_generic_csv, path_column=path_column, score_column=score_column))
    if score_range:
        # finite ends: an infinite one maps every score to 0 (or NaN), and the model's scores
        # back to infinity
        if (len(score_range) != 2 or not all(math.isfinite(v) for v in score_range)
                or not score_range[0] < score_range[1]
                or not math.isfinite(score_range[1] - score_range[0])):
            raise InputError(f"data.score_range must be [low, high], both finite, with low < "
                             f"high, got {list(score_range)}")
        low, high = score_range
        spec = dataclasses.replace(spec, low=float(low), high=float(high), check_range=True,
                                   note=f"data.score_range [{low:g}, {high:g}]")
    if higher_is_better is not None:
        spec = dataclasses.replace(spec, higher_is_better=higher_is_better)
    return spec


def _columns(label_file):
    """'; the file's columns: a, b' for an error message: which columns were read."""
    with open_text(label_file) as f:
        header = next(csv.reader(f), [])
    return f"; the file's columns: {', '.join(header)}"


def _find_file(root, rel):
    full = os.path.join(root, rel)
    if os.path.isfile(full):
        return full
    # Some releases differ in case from their label files (TID2013's I25_... vs i25_...).
    folder, name = os.path.split(full)
    if os.path.isdir(folder):
        lower = name.lower()
        for candidate in os.listdir(folder):
            if candidate.lower() == lower:
                return os.path.join(folder, candidate)
    return None


def read_dataset(kind, label_file, image_root=None, check_files=True, score_range=None,
                 higher_is_better=None, path_column="", score_column=""):
    """Reads a dataset's labels.

    Args:
      kind: a key of `datasets_map`.
      label_file: the dataset's label file.
      image_root: folder the image names are relative to (default: the dataset's usual folder
        beside the label file; absolute names are used as they are).
      check_files: raise if an image does not exist.
      score_range, higher_is_better: the label file's scale and direction where they are not
        the dataset's own (`get_dataset_spec`).
      path_column, score_column: a csv label file's column names where they are none of the
        common spellings.

    Returns:
      list of `ScoredImage`, scores normalised to [0, 1] with higher better.

    Raises:
      ListError: a missing label file or image, a malformed line.
    """
    spec = get_dataset_spec(kind, score_range, higher_is_better, path_column, score_column)
    if not os.path.isfile(label_file):
        raise ListError(f"label file {label_file} {missing(label_file)}")
    if image_root is None:
        image_root = os.path.join(os.path.dirname(os.path.abspath(label_file)),
                                  spec.default_image_root)
        if not os.path.isdir(image_root):
            image_root = os.path.dirname(os.path.abspath(label_file))
    items, seen = [], {}
    span = spec.high - spec.low
    for rel, raw, reference, distortion, *group in spec.reader(label_file, image_root):
        if spec.check_range and not spec.low <= raw <= spec.high:
            hint = ("set data.score_range to the file's scale (e.g. [1, 5]) and "
                    "data.higher_is_better" if kind == "csv" else "is data.dataset right?")
            raise ListError(f"{label_file}: {rel} has score {raw:g}, outside the range "
                            f"{spec.low:g}-{spec.high:g} ({kind}: {spec.note}"
                            f"{_columns(label_file) if kind == 'csv' else ''}); {hint}")
        path = rel if os.path.isabs(rel) else (_find_file(image_root, rel) if check_files
                                               else os.path.join(image_root, rel))
        if path is None or (check_files and not os.path.isfile(path)):
            full = os.path.join(image_root, rel)
            raise ListError(f"{label_file}: image {full} {missing(path or full)}")
        # one image under two spellings (x.png, ./x.png, ../d/x.png) is one image
        seen.setdefault(os.path.realpath(path), []).append(rel)
        score = (raw - spec.low) / span
        items.append(ScoredImage(path, score if spec.higher_is_better else 1.0 - score, raw,
                                 reference, distortion, rel, group[0] if group else None))
    if not items:
        raise ListError(f"{label_file}: no labelled images")
    repeated = sorted(spellings for spellings in seen.values() if len(spellings) > 1)
    if repeated:
        # a repeated image could land in training and validation at once
        example = "; ".join(" = ".join(spellings) for spellings in repeated[:3])
        raise ListError(f"{label_file}: {len(repeated)} images are listed more than once "
                        f"(e.g. {example}); list each image once")
    return items


def split(items, val_fraction=0.2, test_fraction=0.0, seed=0, split_index=0):
    """Seeded train/val/test split; by reference where every item has one, else at random.

    Different `split_index` values give independent splits (for N repeated runs); the same
    (seed, split_index) always gives the same split.

    Returns:
      dict ``{"train": [...], "val": [...], "test": [...]}``.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise InputError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must be "
                         "in [0, 1) and leave some training data")
    rng = np.random.default_rng([seed, split_index])
    by_reference = all(item.reference for item in items)
    units = sorted({item.reference for item in items}) if by_reference else list(range(len(items)))
    order = rng.permutation(len(units))
    n_val = int(round(val_fraction * len(units)))
    n_test = int(round(test_fraction * len(units)))
    part = {}
    for rank, u in enumerate(order):
        part[units[u]] = "val" if rank < n_val else ("test" if rank < n_val + n_test else "train")
    out = {"train": [], "val": [], "test": []}
    for i, item in enumerate(items):
        out[part[item.reference if by_reference else i]].append(item)
    return out


SPLITS = ("all", "train", "val", "test")


def load_splits(data_cfg):
    """``{"all", "train", "val", "test": [ScoredImage]}`` of `data_cfg`
    (`rankiqa.config.MosDataConfig`): its dataset read and split as configured."""
    scale = {"score_range": data_cfg.score_range, "higher_is_better": data_cfg.higher_is_better,
             "path_column": data_cfg.path_column, "score_column": data_cfg.score_column}
    items = read_dataset(data_cfg.dataset, data_cfg.label_file, data_cfg.image_root, **scale)
    parts = split(items, data_cfg.val_fraction, data_cfg.test_fraction, data_cfg.split_seed,
                  data_cfg.split_index)
    for extra_file in data_cfg.extra_train_files:
        extra = read_dataset(data_cfg.dataset, extra_file, **scale)
        known = {os.path.realpath(it.path) for it in items}
        repeated = sorted(it.path for it in extra if os.path.realpath(it.path) in known)
        if repeated:
            raise ListError(f"{extra_file}: {len(repeated)} images are already listed in "
                            f"{data_cfg.label_file} or another extra file (e.g. {repeated[:2]})")
        parts["train"] = parts["train"] + extra
        items = items + extra
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = ({os.path.realpath(it.path) for it in parts[a]} &
                  {os.path.realpath(it.path) for it in parts[b]})
        if shared:  # the split is by unit; this guards the readers' paths
            raise ListError(f"{data_cfg.label_file}: {len(shared)} images are in both {a} and "
                            f"{b} (e.g. {sorted(shared)[:2]})")
    parts["all"] = items
    return parts


def write_generic_csv(path, items):
    """Writes items as a generic ``path,score,reference,distortion`` CSV (scores as given)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "score", "reference", "distortion"])
        for item in items:
            writer.writerow([item.path, f"{item.score:.6f}", item.reference or "",
                             item.distortion or ""])


def label_record(label_file, run_folder):
    """What binds a run to its labels (``rankiqa.json``'s ``labels``): the file's SHA-256 and
    rows, and its path from the run folder, so that the run finds it from any working
    directory while both move together."""
    with open(label_file, "rb") as f:
        data = f.read()
    return {"sha256": hashlib.sha256(data).hexdigest(),
            "rows": max(len([l for l in data.splitlines() if l.strip()]) - 1, 0),
            "from_run": os.path.relpath(os.path.abspath(label_file), os.path.abspath(run_folder))}


def changed_labels(record, label_file):
    """None when `label_file` is the file `record` (`label_record`) describes, else how it
    differs, in words."""
    now = label_record(label_file, ".")
    if now["sha256"] == record.get("sha256"):
        return None
    return (f"{label_file} is not the label file the run started with ({record.get('rows')} "
            f"rows then, {now['rows']} now, other contents)")


def bound_label_file(record, run_folder, typed):
    """The label file a run trained on, found from here: the path typed at training (`typed`,
    from the working directory then) when it holds the same labels, else the same file by its
    path from the run folder. Raises `InputError` naming both when neither does."""
    candidates = [typed, os.path.normpath(os.path.join(run_folder, record.get("from_run", "")))]
    for path in candidates:
        if os.path.isfile(path) and changed_labels(record, path) is None:
            return path
    raise InputError(
        f"the label file the run {run_folder} trained on is not found from here: {typed} "
        + ("is another file" if os.path.isfile(typed) else "does not exist")
        + f" and {candidates[1]} " + ("is another file" if os.path.isfile(candidates[1])
                                       else "does not exist")
        + "; evaluate from the folder it was trained in, or pass --set data.label_file=FILE "
          "to score it on another")


def listed_paths(label_file, path_column=""):
    """The photos a label file names, resolved as `read_dataset` resolves a csv's (relative to
    its folder), whatever else it holds: only the path column is read (any spelling of
    `PATH_COLUMNS`, or `path_column`), so a file on any score scale, or a file of paths alone
    (with a ``path`` header or none), will do."""
    if not os.path.isfile(label_file):
        raise ListError(f"label file {label_file} {missing(label_file)}")
    root = os.path.dirname(os.path.abspath(label_file))
    options = (path_column.strip().lower(),) if path_column else PATH_COLUMNS
    with open_text(label_file) as f:
        first = next(csv.reader(f), None)
    if first is None:
        return []
    if len(first) == 1 and first[0].strip().lower() not in options and ";" not in first[0]:
        with open_text(label_file) as f:  # no header: one path per line
            rels = [row[0].strip() for row in csv.reader(f) if row and row[0].strip()]
    else:
        hint = ("; name the column with --path-column" if not path_column else "")
        rels = [_pick(row, options) for _, row in _csv_rows(label_file, [options], hint)]
    return [rel if os.path.isabs(rel) else os.path.join(root, rel) for rel in rels]
