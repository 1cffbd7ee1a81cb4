"""List files: the rank list of stage one (and, in stage two, the MOS lists of IQA datasets).

Rank list format (CSV, UTF-8, written by `rankiqa make-rank-data`)::

    reference,distortion,level,path
    astronaut,gblur,0,images/astronaut/astronaut.png
    astronaut,gblur,1,images/astronaut/astronaut_gblur_1.png
    ...

One *group* is a (reference, distortion) pair; its rows hold levels 0..L-1, level 0 being the
pristine reference (shared by every family of that reference). Relative paths are relative to the
list file's folder, so a data folder can be moved whole.
"""

import codecs
import collections
import csv
import io
import os
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from rankiqa.errors import InputError

RANK_LIST_HEADER = ("reference", "distortion", "level", "path")
RANK_LIST_NAME = "rank_list.csv"


class ListError(InputError):
    """A list file is malformed; the message names the file and the line."""


def missing(path):
    """What is wrong with a listed image that is not a file: it does not exist, or it is a
    folder, a FIFO or a device (reading one would block)."""
    return ("is not a regular file (a folder, a FIFO or a device)" if os.path.exists(path)
            else "does not exist")


def open_text(path):
    """A text file's lines, as `open` gives them (newline="" for csv), from UTF-8 (with or
    without a BOM) or UTF-16 with its BOM (what spreadsheets save); any other encoding is
    refused with the line and byte, and how to convert it, rather than guessed: a guess
    would silently change the image names it holds."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        return io.StringIO(data.decode(encoding), newline="")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ListError(f"{path}:{line}: not {encoding.replace('-sig', '')} text (byte "
                        f"0x{data[e.start]:02x}); save it as UTF-8 (a spreadsheet's 'CSV UTF-8', "
                        f"or: iconv -f latin1 -t utf-8 {path} > utf8.csv)") from None


@dataclass(frozen=True)
class RankGroup:
    """One reference under one distortion family: ``paths[k]`` is level k, 0 pristine."""

    reference: str
    distortion: str
    paths: Tuple[str, ...]


def write_rank_list(path, rows):
    """Writes rows ``(reference, distortion, level, relative_path)`` with the header."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(RANK_LIST_HEADER)
        writer.writerows(rows)


def read_rank_list(path, levels=None, distortions=(), check_files=True):
    """Reads a rank list into groups, ordered by (reference, distortion).

    Args:
      path: the CSV file.
      levels: if given, every group must have exactly levels 0..levels-1.
      distortions: keep only these families (empty: all).
      check_files: raise if an image file does not exist.

    Returns:
      list of `RankGroup` with absolute paths.

    Raises:
      ListError: a missing file, a bad header or line, a group with missing or repeated levels.
    """
    if not os.path.isfile(path):
        raise ListError(f"rank list {path} does not exist (make one with `rankiqa make-rank-data`)")
    root = os.path.dirname(os.path.abspath(path))
    groups = collections.defaultdict(dict)
    with open_text(path) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != RANK_LIST_HEADER:
            raise ListError(f"{path}:1: expected the header {','.join(RANK_LIST_HEADER)}, "
                            f"got {header!r}")
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 4:
                raise ListError(f"{path}:{line_no}: expected 4 fields, got {len(row)}: {row!r}")
            reference, distortion, level_text, rel = row
            try:
                level = int(level_text)
            except ValueError:
                raise ListError(f"{path}:{line_no}: level {level_text!r} is not an integer") from None
            if distortions and distortion not in distortions:
                continue
            full = rel if os.path.isabs(rel) else os.path.join(root, rel)
            if check_files and not os.path.isfile(full):
                raise ListError(f"{path}:{line_no}: image {full} {missing(full)}")
            group = groups[(reference, distortion)]
            if level in group:
                raise ListError(f"{path}:{line_no}: level {level} of {reference}/{distortion} "
                                "appears twice")
            group[level] = full
    result = []
    for (reference, distortion), by_level in sorted(groups.items()):
        expected = levels if levels is not None else len(by_level)
        if sorted(by_level) != list(range(expected)):
            raise ListError(f"{path}: {reference}/{distortion} has levels {sorted(by_level)}, "
                            f"expected 0..{expected - 1}")
        result.append(RankGroup(reference, distortion, tuple(by_level[k] for k in range(expected))))
    if not result:
        wanted = f" for distortions {list(distortions)}" if distortions else ""
        raise ListError(f"{path}: no groups{wanted}")
    return result


def split_by_reference(groups, holdout, seed):
    """Splits groups into (train, held_out) with `holdout` whole references held out.

    No reference appears on both sides, so held-out accuracy measures unseen content.
    """
    references = sorted({g.reference for g in groups})
    if holdout < 0 or holdout >= len(references):
        raise ListError(f"data.holdout_references={holdout} must be in 0..{len(references) - 1} "
                         f"(the list has {len(references)} references)")
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(references)[:holdout].tolist())
    return ([g for g in groups if g.reference not in held],
            [g for g in groups if g.reference in held])
