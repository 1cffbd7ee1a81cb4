"""`rankiqa inspect-ckpt`: what a checkpoint holds, read with `tf.train.load_checkpoint`."""

import numpy as np

from rankiqa.compat import tf
from rankiqa.weights import restore
from rankiqa.weights.restore import CheckpointError, resolve_checkpoint


def inspect_checkpoint(checkpoint):
    """Returns (prefix, rows ``[(name, shape, dtype, size)]``, total parameters)."""
    prefix = resolve_checkpoint(checkpoint)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {prefix}: {e}") from None
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    rows = [(name, tuple(shapes[name]), dtypes[name].name, int(np.prod(shapes[name], dtype=np.int64)))
            for name in sorted(shapes)]
    return prefix, rows, sum(r[3] for r in rows)


def read_tensor(checkpoint, name):
    prefix = resolve_checkpoint(checkpoint)
    reader = tf.train.load_checkpoint(prefix)
    if not reader.has_tensor(name):
        close = [n for n in sorted(reader.get_variable_to_shape_map()) if name.split("/")[-1] in n]
        raise CheckpointError(f"{prefix} has no tensor {name!r}"
                              + (f"; similar: {close[:5]}" if close else ""))
    return restore.read_tensor(reader, name, prefix)
