"""Scoring at archive scale: `rankiqa predict --from-list` and `rankiqa merge-scores`.

A list of millions of paths is read in fixed chunks (`CHUNK` paths at fixed places in the
list, so memory stays flat however long the list is), and each scored row is appended to
``OUT.unfinished`` as soon as its batch is done: a killed run loses at most the batch in
flight. ``--resume`` continues that file, scoring again only the chunks it had not finished
(whole, so that every photo is scored in the same batch as before and gets the same bits) and
writing only the rows it lacks; the output is renamed to ``OUT`` once the list is done, so an
``OUT`` is always complete. ``--shard K/N`` scores every N-th chunk from the K-th (0-based), for
Kubernetes Indexed Jobs and Slurm job arrays; `merge` joins the shards' outputs, checking that
every path appears once: they equal one run's file, bit for bit.

The rows are `rankiqa predict`'s CSV rows (`HEADER`).
"""

import csv
import io
import os
import re

from rankiqa.data import images as images_lib
from rankiqa.data.lists import missing as not_a_file
from rankiqa.errors import InputError
from rankiqa.run import rundir

HEADER = ["path", "score", "model", "views", "score_scale"]
CHUNK = 1024  # paths read, decoded and scored together; rescored whole by a resume
UNFINISHED = ".unfinished"


def parse_shard(text):
    """``"K/N"`` -> (K, N), 0 <= K < N; None -> (0, 1): the whole list."""
    whole = (0, 1)
    if text is None:
        return whole
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise InputError(f"--shard {text!r}: expected K/N with 0 <= K < N (K counts from 0, "
                         "as $JOB_COMPLETION_INDEX and $SLURM_ARRAY_TASK_ID with --array=0-N-1 do)")
    return int(match.group(1)), int(match.group(2))


def check_list(list_file):
    """Refuses a --from-list that is missing or not a regular file (a FIFO would block)."""
    if not os.path.isfile(list_file):
        raise InputError(f"--from-list {list_file} {not_a_file(list_file)}")


def listed(list_file, shard=(0, 1)):
    """The paths of `list_file` (one per line; blank lines skipped) that belong to `shard`
    (K, N): every N-th chunk of `CHUNK` paths from the K-th, so that each photo is scored in
    the batch it would have in one run of the whole list (the same bits). Read lazily."""
    check_list(list_file)
    k, n = shard
    with open(list_file, encoding="utf-8", errors="surrogateescape", newline="") as f:
        index = 0
        for line in f:
            path = line.rstrip("\r\n")
            if not path:
                continue
            if (index // CHUNK) % n == k:
                yield path
            index += 1


def chunks(paths, size=None):
    """Lists of `size` (default `CHUNK`) consecutive items of `paths` (the last shorter)."""
    size = size or CHUNK
    chunk = []
    for path in paths:
        chunk.append(path)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def finished_rows(path):
    """The paths an output already holds, its last line dropped if a kill cut it (a row
    without its line end is truncated away). Refuses a file that is not predict's CSV."""
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    rows = list(csv.reader(io.StringIO(data.decode("utf-8", "surrogateescape"), newline="")))
    if not rows or rows[0] != HEADER:
        raise InputError(f"{path} is not a predict output (header {rows[0] if rows else []}, "
                         f"expected {HEADER}); name another --output")
    return {row[0] for row in rows[1:] if row}


def row_bytes(row):
    """One CSV line as bytes: a field with a carriage return is quoted (csv quotes only the
    line terminator's characters by default), so a reader never splits it into two rows; a
    file name that is not UTF-8 keeps its own bytes. Every CSV a command writes is made of
    these."""
    buffer = io.StringIO()
    quoting = csv.QUOTE_ALL if any("\r" in str(v) for v in row) else csv.QUOTE_MINIMAL
    csv.writer(buffer, lineterminator="\n", quoting=quoting).writerow(row)
    return buffer.getvalue().encode("utf-8", "surrogateescape")


def start_output(output, resume, force, inputs):
    """(the file rows go to, the paths it holds): ``OUT.unfinished``, continued with
    `resume` (from a complete ``OUT`` too, when the list has grown), else started anew; an
    unfinished one is never replaced without `resume` or `force`."""
    unfinished = output + UNFINISHED
    if resume:
        source = unfinished if os.path.exists(unfinished) else output
        if os.path.exists(source):
            done = finished_rows(source)
            if source == output:
                with rundir.writing(unfinished) as tmp, open(output, "rb") as src, \
                        open(tmp, "wb") as dst:
                    dst.write(src.read())
            return unfinished, done
    elif os.path.exists(unfinished) and not force:
        raise InputError(f"{unfinished} holds an unfinished run's rows: pass --resume to "
                         "continue it, or --force to start over")
    rundir.check_output(output, inputs, force or resume, "--output")
    rundir.write_atomic(unfinished, row_bytes(HEADER))
    return unfinished, set()


def score_list(loaded, list_file, output, views, shard=(0, 1), resume=False, force=False,
               log=print, progress=None):
    """Scores every path of `list_file` in `shard` with `loaded` (a
    `rankiqa.serve.predict.Model`) on `views`, into `output` as above.

    Returns:
      {"scored": rows written now, "had": rows found from before, "skipped": unreadable}.
    """
    total = sum(1 for _ in listed(list_file, shard))
    if not total and not any(True for _ in listed(list_file)):
        raise InputError(f"--from-list {list_file} names no path")
    if not total:  # more shards than chunks: this one's file holds its header alone
        log(f"notice: shard {shard[0]}/{shard[1]} of {list_file} holds no chunk of {CHUNK} "
            "paths: its output has no row")
    target, done = start_output(output, resume, force, [list_file])
    if done:
        log(f"resuming: {len(done)} of {total} rows already in {target}")
    counts = {"scored": 0, "had": 0, "skipped": 0}
    describe, scale = views.describe(), loaded.scorer.model.scale.text
    offset = 0
    with open(target, "ab") as out:
        for chunk in chunks(listed(list_file, shard)):
            missing = {k for k, path in enumerate(chunk) if path not in done}
            counts["had"] += len(chunk) - len(missing)
            if missing:  # the whole chunk again: each photo in the batch it had before
                for k, value in loaded.scorer.iter_scores(chunk, views):
                    if k not in missing:
                        continue
                    if isinstance(value, images_lib.BadImageError):
                        counts["skipped"] += 1
                        log(f"skipped: {value}")
                        continue
                    out.write(row_bytes([chunk[k], f"{float(value.mean()):.6f}",
                                         loaded.name, describe, scale]))
                    out.flush()  # on disk before the next: a kill loses only the batch in flight
                    counts["scored"] += 1
            offset += len(chunk)
            if progress:
                progress(offset, total)
    os.replace(target, output)
    return counts


def merge(outputs, output, list_file=None, force=False):
    """Joins predict outputs (the shards of one list) into `output`, in the list's order when
    `list_file` is given (else by path), refusing a path given twice and, with `list_file`, a
    path it does not list. Returns (rows written, the listed paths without a row: photos that
    could not be read, each named in its shard's log)."""
    rundir.check_output(output, [*outputs, *([list_file] if list_file else [])], force,
                        "--output")
    rows, where = {}, {}
    for source in outputs:
        if not os.path.isfile(source):
            raise InputError(f"{source} {not_a_file(source)}")
        if os.path.exists(source + UNFINISHED):
            raise InputError(f"{source}{UNFINISHED} is beside {source}: that shard's rerun is "
                             "unfinished; finish it with --resume first")
        with open(source, encoding="utf-8", errors="surrogateescape", newline="") as f:
            reader = csv.reader(f)
            if next(reader, None) != HEADER:
                raise InputError(f"{source} is not a predict output (expected {HEADER})")
            for row in reader:
                if row[0] in rows:
                    raise InputError(f"{row[0]} is in both {where[row[0]]} and {source}: "
                                     "shards must not overlap")
                rows[row[0]], where[row[0]] = row, source
    order, absent = sorted(rows), []
    if list_file:
        listed_order = list(dict.fromkeys(listed(list_file)))
        extra = sorted(set(rows) - set(listed_order))
        if extra:
            raise InputError(f"{len(extra)} scored paths are not in {list_file} (e.g. "
                             f"{extra[:2]}): these outputs are of another list")
        absent = [p for p in listed_order if p not in rows]
        order = [p for p in listed_order if p in rows]
    rundir.write_atomic(output, b"".join([row_bytes(HEADER)] + [row_bytes(rows[p])
                                                                 for p in order]))
    return len(order), absent
