"""Judgement files: people's answers to "which of these two looks better?" (and 1-5 ratings).

One line per answer, appended and never rewritten (CSV, UTF-8; paths relative to the file's
folder, as in a label file)::

    left,right,choice,rater,time
    photos/a.jpg,photos/b.jpg,left,ana,2026-12-07T10:31:02Z
    photos/c.jpg,photos/a.jpg,tie,ben,2026-12-07T10:31:09Z

``choice`` is ``left``, ``right`` or ``tie``; ``rater`` a name; ``time`` UTC, ISO 8601. An
answer taken back (the page's undo) is a later line of the same rater and the same two photos,
in the same order, with choice ``undo``: readers drop that rater's latest answer to the pair.

A rating file (`rankiqa rate --mode score`) is of the same family: ``photo,score,rater,time``,
``score`` a whole number from 1 to 5, or ``undo`` for that rater's latest rating of the photo.

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
RATING_HEADER = ("photo", "score", "rater", "time")
CHOICES = ("left", "right", "tie")
RATINGS = ("1", "2", "3", "4", "5")
UNDO = "undo"


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


@dataclasses.dataclass(frozen=True)
class Rating:
    """One rating: `photo` as written, `score` 1-5."""

    photo: str
    score: int
    rater: str
    time: str


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


def header_of(path):
    """The first line of `path` as lower-case field names (() when empty)."""
    if not os.path.isfile(path):
        raise ListError(f"judgement file {path} does not exist")
    first = next(csv.reader(open_text(path)), [])
    return tuple(c.strip().lower() for c in first)


def read_pairs(path, photos=None):
    """The answers of judgement file `path`, paths resolved against its folder, answers taken
    back (``undo``) left out.

    Args:
      photos: the collection's photos (absolute paths), where known: answers naming others are
        left out and counted; a file none of whose answers name one is refused (a judgement
        file of another collection).

    Raises:
      ListError: no such file, another header, or no usable answer.
    """
    found, kept = _read(path, PAIR_HEADER, photos, _pair_problem, 2)
    answers = {}
    for number, (left, right), (choice, rater, time) in kept:
        judgement = Judgement(left, right, choice, rater, time)
        real = [os.path.realpath(p) for p in (left, right)]
        key = (rater, *sorted(real))  # one pair whichever side each photo was shown on
        said = judgement.outcome if real[0] <= real[1] else 1 - judgement.outcome
        if key in answers and answers[key] != said:
            found.contradictions.append((rater, *(os.path.relpath(p) for p in (left, right))))
        answers[key] = said
        found.judgements.append(judgement)
    _refuse_empty(path, found, found.judgements)
    return found


def read_ratings(path, photos=None):
    """The 1-5 ratings of rating file `path` (`read_pairs`'s rules; `Read.judgements` holds
    `Rating`s)."""
    found, kept = _read(path, RATING_HEADER, photos, _rating_problem, 1)
    found.judgements = [Rating(photo, int(score), rater, time)
                        for _, (photo,), (score, rater, time) in kept]
    _refuse_empty(path, found, found.judgements)
    return found


def _read(path, header, photos, problem_of, width):
    """Every line of `path` checked: the lines kept ([(number, photos, rest)], undone answers
    dropped) and a `Read` counting the rest."""
    if header_of(path) != header:
        raise ListError(f"{path}: not a {'judgement' if width == 2 else 'rating'} file: its "
                        f"first line must be {','.join(header)}")
    root = os.path.dirname(os.path.abspath(path))
    known = None if photos is None else {os.path.realpath(p) for p in photos}
    found, kept = Read([], [], [], [], []), []
    for number, row in enumerate(list(csv.reader(open_text(path)))[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        problem = problem_of(row)
        if problem:
            found.damaged.append((number, problem))
            continue
        cells = [cell.strip() for cell in row]
        full = tuple(os.path.normpath(os.path.join(root, p)) for p in cells[:width])
        rest = (cells[width].lower(), *cells[width + 1:])
        if width == 2 and os.path.realpath(full[0]) == os.path.realpath(full[1]):
            found.self_pairs.append(number)
        elif known is not None and any(os.path.realpath(p) not in known for p in full):
            found.unknown.append((number, next(p for p in full if os.path.realpath(p)
                                               not in known)))
        elif rest[0] == UNDO:
            taken = [k for k, (_, f, r) in enumerate(kept) if f == full and r[1] == rest[1]]
            if taken:
                del kept[taken[-1]]
            else:
                found.damaged.append((number, "an undo with no answer of its rater before it"))
        else:
            kept.append((number, full, rest))
    return found, kept


def _refuse_empty(path, found, kept):
    if not kept:
        what = ("none names a photo of this collection: is it another collection's file?"
                if found.unknown else "no usable answer")
        raise ListError(f"{path}: {what}" + "".join(f"; {p}" for p in found.problems()))


def _common_problem(rater, time):
    if not rater:
        return "no rater"
    try:
        datetime.datetime.strptime(time, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return f"time {time!r} is not UTC ISO 8601 (2026-12-07T10:31:02Z)"
    return None


def _rating_problem(row) -> Optional[str]:
    if len(row) != len(RATING_HEADER):
        return f"{len(row)} fields, not {len(RATING_HEADER)} (a line cut short?)"
    photo, score, rater, time = (cell.strip() for cell in row)
    if not photo:
        return "the photo is missing"
    if score.lower() not in RATINGS + (UNDO,):
        return f"score {score!r} is not a whole number from 1 to 5"
    return _common_problem(rater, time)


def _pair_problem(row) -> Optional[str]:
    if len(row) != len(PAIR_HEADER):
        return f"{len(row)} fields, not {len(PAIR_HEADER)} (a line cut short?)"
    left, right, choice, rater, time = (cell.strip() for cell in row)
    if not left or not right:
        return "a photo is missing"
    if choice.lower() not in CHOICES + (UNDO,):
        return f"choice {choice!r} is not one of {', '.join(CHOICES + (UNDO,))}"
    return _common_problem(rater, time)
