"""Judgement files: people's answers to "which of these two looks better?" (and 1-5 ratings).

One line per answer, appended and never rewritten (CSV, UTF-8; paths relative to the file's
folder, as in a label file)::

    left,right,choice,rater,time
    photos/a.jpg,photos/b.jpg,left,ana,2026-12-07T10:31:02Z
    photos/c.jpg,photos/a.jpg,tie,ben,2026-12-07T10:31:09Z

``choice`` is ``left``, ``right`` or ``tie``; ``rater`` a name; ``time`` UTC, ISO 8601.

Each answer is one ``write`` of one line to a file opened for appending, then flushed to disk
(`append`): a crash loses at most the answer being written, never an earlier one, and a line cut
by a crash is reported by its number when read, not taken for an answer.
"""

import csv
import dataclasses
import datetime
import io
import os
from typing import List, Optional, Tuple

from rankiqa.data.lists import ListError, open_text

PAIR_HEADER = ("left", "right", "choice", "rater", "time")
CHOICES = ("left", "right", "tie")


@dataclasses.dataclass(frozen=True)
class Judgement:
    """One answer: `left` and `right` as written, `choice` one of `CHOICES`."""

    left: str
    right: str
    choice: str
    rater: str
    time: str

    @property
    def outcome(self):
        """1 when left was chosen, 0 when right, 0.5 for a tie."""
        return {"left": 1.0, "right": 0.0, "tie": 0.5}[self.choice]


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _line(values):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def append(path, values, header):
    """Appends one answer (`values`, in `header`'s order) to `path`, writing `header` first when
    the file is new; on disk (fsync) before it returns."""
    line = _line(values)
    if "\n" in line[:-1] or "\r" in line:
        raise ListError(f"an answer to {path} cannot hold a line break: {values}")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size == 0:
            line = _line(header) + line
        os.write(fd, line.encode("utf-8"))  # one write of one line: appended whole
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclasses.dataclass
class Read:
    """What `read_pairs` found: the answers, and every line it could not take, by number."""

    judgements: List[Judgement]
    damaged: List[Tuple[int, str]]
    self_pairs: List[int]
    unknown: List[Tuple[int, str]]
    contradictions: List[Tuple[str, str, str]]

    def problems(self):
        """One line for each kind of problem found (counted), empty when none."""
        out = []
        if self.damaged:
            lines = ", ".join(str(n) for n, _ in self.damaged[:5])
            out.append(f"{len(self.damaged)} damaged lines left out (line {lines}"
                       f"{', ...' if len(self.damaged) > 5 else ''}: {self.damaged[0][1]})")
        if self.self_pairs:
            out.append(f"{len(self.self_pairs)} answers compare a photo with itself, left out "
                       f"(line {', '.join(map(str, self.self_pairs[:5]))})")
        if self.unknown:
            out.append(f"{len(self.unknown)} answers name photos not in the collection, left "
                       f"out (line {self.unknown[0][0]}: {self.unknown[0][1]})")
        if self.contradictions:
            rater, a, b = self.contradictions[0]
            out.append(f"{len(self.contradictions)} pairs were answered differently by the same "
                       f"rater (e.g. {rater}: {a} vs {b}); every answer is kept")
        return out


def read_pairs(path, photos=None):
    """The answers of judgement file `path`, paths resolved against its folder.

    Args:
      photos: the collection's photos (absolute paths), where known: answers naming others are
        left out and counted; a file none of whose answers name one is refused (a judgement
        file of another collection).

    Raises:
      ListError: no such file, another header, or no usable answer.
    """
    if not os.path.isfile(path):
        raise ListError(f"judgement file {path} does not exist")
    root = os.path.dirname(os.path.abspath(path))
    rows = list(csv.reader(open_text(path)))
    if not rows or tuple(c.strip().lower() for c in rows[0]) != PAIR_HEADER:
        raise ListError(f"{path}: not a judgement file: its first line must be "
                        f"{','.join(PAIR_HEADER)}")
    known = None if photos is None else {os.path.realpath(p) for p in photos}
    found = Read([], [], [], [], [])
    answers = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        problem = _problem(row)
        if problem:
            found.damaged.append((number, problem))
            continue
        left, right, choice, rater, time = (cell.strip() for cell in row)
        full = [os.path.normpath(os.path.join(root, p)) for p in (left, right)]
        if os.path.realpath(full[0]) == os.path.realpath(full[1]):
            found.self_pairs.append(number)
            continue
        stray = [p for p in full if known is not None and os.path.realpath(p) not in known]
        if stray:
            found.unknown.append((number, stray[0]))
            continue
        judgement = Judgement(full[0], full[1], choice.lower(), rater, time)
        real = [os.path.realpath(p) for p in full]
        key = (rater, *sorted(real))  # one pair whichever side each photo was shown on
        said = judgement.outcome if real[0] <= real[1] else 1 - judgement.outcome
        if key in answers and answers[key] != said:
            found.contradictions.append((rater, left, right))
        answers[key] = said
        found.judgements.append(judgement)
    if not found.judgements:
        what = ("none names a photo of this collection: is it another collection's file?"
                if found.unknown else "no usable answer")
        raise ListError(f"{path}: {what}" + "".join(f"; {p}" for p in found.problems()))
    return found


def _problem(row) -> Optional[str]:
    if len(row) != len(PAIR_HEADER):
        return f"{len(row)} fields, not {len(PAIR_HEADER)} (a line cut short?)"
    left, right, choice, rater, time = (cell.strip() for cell in row)
    if not left or not right:
        return "a photo is missing"
    if choice.lower() not in CHOICES:
        return f"choice {choice!r} is not one of {', '.join(CHOICES)}"
    if not rater:
        return "no rater"
    try:
        datetime.datetime.strptime(time, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return f"time {time!r} is not UTC ISO 8601 (2026-12-07T10:31:02Z)"
    return None
