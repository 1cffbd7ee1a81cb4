"""`rankiqa merge-ckpt`: several checkpoints into one, safely (the RankIQA write-up's
`merge_cpks`, with clashes reported instead of overwritten).

Each input's variables keep their dtype and shape; ``prefixes`` puts an input under a scope
(``model1/`` + name) so that two models with the same names can live in one graph. A name that
two inputs both provide is a clash: an error listing every clash, unless the values are identical
or ``prefer`` names the input that wins. The output is written to a temporary folder and moved
into place only when complete; an existing output needs ``force``.
"""

import os

import numpy as np

from rankiqa.run import rundir
from rankiqa.weights import restore
from rankiqa.errors import InputError
from rankiqa.weights.restore import CheckpointError

MERGED_NAME = restore.WRITTEN_NAME


class MergeClash(CheckpointError):
    """Two inputs give different values under one name."""


def merge_checkpoints(inputs, output, prefixes=None, prefer=None, force=False):
    """Merges checkpoints.

    Args:
      inputs: checkpoint prefixes or training directories.
      output: output directory; the checkpoint is ``output/model.ckpt``.
      prefixes: ``{input: scope prefix or [prefixes]}`` prepended to that input's names; an
        input given n times takes its n prefixes in order (one checkpoint under two scopes).
      prefer: an input whose value wins every clash it is part of.
      force: replace an existing output.

    Returns:
      (checkpoint prefix written, ``{name: source}``), a source being the input, followed by
      `` as PREFIX`` when it has one.

    Raises:
      MergeClash: clashing names (all listed); nothing is written.
    """
    prefixes = check_prefixes(inputs, prefixes, prefer)
    rundir.check_output(output, inputs, force, "--output-dir")
    readers = {item: restore.checkpoint_source(item) for item in dict.fromkeys(inputs)}
    merged, source, clashes, seen = {}, {}, [], {}
    for item in inputs:
        occurrence = seen[item] = seen.get(item, -1) + 1
        scope = prefixes[item][occurrence] if item in prefixes else ""
        label = f"{item} as {scope}" if scope else item
        reader = readers[item]  # every input opened before any is read: a bad one fails at once
        for name in sorted(reader.shapes):
            value = reader.read(name)
            target = scope + name
            if target in merged:
                same = (merged[target].dtype == value.dtype
                        and np.array_equal(merged[target], value))
                if same or source[target].split(" as ")[0] == prefer:
                    continue
                if item != prefer:
                    clashes.append(f"{target} (in {source[target]} and {label})")
                    continue
            merged[target], source[target] = value, label
    if clashes:
        raise MergeClash(f"{len(clashes)} names clash; use --prefix IN=scope/ or --prefer IN: "
                         + "; ".join(clashes))
    restore.write_checkpoint(merged, output)
    return os.path.join(output, MERGED_NAME), source


def check_prefixes(inputs, prefixes, prefer):
    """``{input: [prefix, ...]}`` from ``{input: prefix or [prefixes]}``, refused where they
    do not fit the inputs (one per occurrence of an input given several times), or where
    `prefer` is not an input."""
    prefixes = {k: [v] if isinstance(v, str) else list(v) for k, v in (prefixes or {}).items()}
    unknown = sorted(set(prefixes) - set(inputs))
    if unknown:
        raise InputError(f"--prefix names {unknown}, which are not among the inputs")
    for item in sorted(set(inputs)):
        given, scopes = inputs.count(item), prefixes.get(item, [])
        if given > 1 and scopes and len(scopes) != given:
            raise InputError(f"{item} is given {given} times with {len(scopes)} --prefix; give "
                             "one --prefix per occurrence (the k-th takes the k-th)")
        if given == 1 and len(scopes) > 1:
            raise InputError(f"{item} has {len(scopes)} --prefix but is given once")
    if prefer is not None and prefer not in inputs:
        raise InputError(f"--prefer {prefer} is not among the inputs")
    return prefixes
