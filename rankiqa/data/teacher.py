"""A teacher table (``rankiqa teach``'s teacher.csv): one row per view a teacher scored,
``path, view, scale, y, x, flip, score, fold``; the view spec ``(scale, y, x, flip)`` is
`rankiqa.preprocessing.preprocess.placed_view`'s, so that a student sees the very pixels the teacher saw.
NumPy only: `rankiqa.run.checks` reads it before TensorFlow starts."""

import csv
import os

import numpy as np

from rankiqa.errors import InputError

TABLE_COLUMNS = ("path", "view", "scale", "y", "x", "flip", "score", "fold")


def read_table(path):
    """``(paths, specs [n, 4] (scale, y, x, flip), scores [n])`` of a teacher.csv, every row
    checked: a student must not start minutes of training on a table it cannot use.

    Raises:
      InputError: the file is missing, lacks a column, or a row holds a value out of range
        (named by its line).
    """
    if not os.path.isfile(path):
        raise InputError(f"teacher table {path} does not exist (rankiqa teach writes one)")
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("path", "scale", "y", "x", "flip", "score")
                   if c not in (reader.fieldnames or ())]
        if missing:
            raise InputError(f"{path}: no column {', '.join(missing)}; a teacher table has "
                             f"{', '.join(TABLE_COLUMNS)}")
        paths, specs, scores = [], [], []
        for line, row in enumerate(reader, start=2):
            try:
                spec = [float(row[c]) for c in ("scale", "y", "x", "flip")]
                score = float(row["score"])
            except (TypeError, ValueError):
                raise InputError(f"{path}, line {line}: scale, y, x, flip and score must be "
                                 "numbers") from None
            if not all(0.0 <= v <= 1.0 for v in spec) or not np.isfinite(score):
                raise InputError(f"{path}, line {line}: scale, y, x and flip lie in [0, 1] "
                                 f"and the score is finite; got {spec} and {row['score']}")
            paths.append(row["path"])
            specs.append(spec)
            scores.append(score)
    if not paths:
        raise InputError(f"{path}: no views")
    return paths, np.array(specs, np.float32), np.array(scores, np.float32)
