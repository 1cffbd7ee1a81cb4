"""TensorFlow 2.x / tf-slim 1.1.0 shims, applied once before anything imports `tf_slim`.

tf-slim 1.1.0 (its last release, 2020) reaches into private TensorFlow modules that TF 2.16+
reorganised. Each shim below aliases a moved name to its public twin, and only where the name is
missing, so that an older TensorFlow that still has it is left untouched.

Import this module (``from rankiqa.compat import tf, slim``) instead of importing `tf_slim`
directly; every rankiqa module does.
"""

import contextlib
import importlib
import os
import sys
import tempfile
import warnings

VERBOSE_ENV = "RANKIQA_VERBOSE"  # set (to 1) by `rankiqa --verbose`: TensorFlow's own lines too


def verbose():
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextlib.contextmanager
def _native_stderr_captured():
    """Holds back what native code writes to file descriptor 2 while TensorFlow loads.

    The CUDA stubs log "Could not find cuda drivers" through absl *before* absl reads
    TF_CPP_MIN_LOG_LEVEL (hence absl's "WARNING: All log messages before
    absl::InitializeLog()..."), so no environment variable silences them: ~4 lines before every
    command. They are replayed if the import fails, and shown with `rankiqa --verbose`.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (a notebook, a test runner)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            capture.seek(0)
            os.write(fd, capture.read())
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def quiet_native():
    """What TensorFlow's native code prints while the block runs (the first tf.Session logs
    "failed call to cuInit" on a machine without a GPU, even when the user's own import of
    TensorFlow came before ours and read no TF_CPP_MIN_LOG_LEVEL) is held back, and replayed
    if the block fails; `rankiqa --verbose` (RANKIQA_VERBOSE=1) shows it."""
    return contextlib.nullcontext() if verbose() else _native_stderr_captured()


# TensorFlow's C++ INFO, WARNING and ERROR lines (oneDNN, "failed call to cuInit" on a machine
# without a GPU) drown the CLI's own output; a real failure still surfaces as a Python exception.
# A variable the user set, or `--verbose`, wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose() else "3")

with contextlib.nullcontext() if verbose() else _native_stderr_captured():
    import tensorflow.compat.v1 as tf  # noqa: E402
from tensorflow.python.framework import ops as _ops  # noqa: E402
from tensorflow.python.ops import array_ops as _array_ops  # noqa: E402
from tensorflow.python.ops import control_flow_ops as _control_flow_ops  # noqa: E402
from tensorflow.python.ops import variable_scope as _variable_scope  # noqa: E402


def _alias_missing(module, name, value):
    if not hasattr(module, name):
        setattr(module, name, value)


# slim's layers test `isinstance(x, ops.Tensor)` / `ops.IndexedSlices`; both moved out of ops.
_alias_missing(_ops, "Tensor", tf.Tensor)
_alias_missing(_ops, "IndexedSlices", tf.IndexedSlices)
# slim's batch_norm, learning and evaluation call control_flow_ops.cond/case/while_loop/Assert,
# which now live in cond.py / while_loop.py and are exported only publicly.
_alias_missing(_control_flow_ops, "cond", tf.cond)
_alias_missing(_control_flow_ops, "case", tf.case)
_alias_missing(_control_flow_ops, "while_loop", tf.while_loop)
_alias_missing(_control_flow_ops, "Assert", tf.Assert)
# slim's nets (resnet_utils, nets_factory helpers) use array_ops.stack/unstack.
_alias_missing(_array_ops, "stack", tf.stack)
_alias_missing(_array_ops, "unstack", tf.unstack)
# slim.variables.variable() calls variable_scope.variable(), removed from that module.
_alias_missing(_variable_scope, "variable", tf.Variable)


def _register_legacy_keras_layers():
    """slim.batch_norm imports `tf_keras.legacy_tf_layers.normalization` on its UPDATE_OPS path;
    tf_keras 2.16+ keeps that package at `tf_keras.src.legacy_tf_layers`."""
    old = "tf_keras.legacy_tf_layers"
    try:
        importlib.import_module(old + ".normalization")
        return
    except ImportError:
        pass
    try:
        package = importlib.import_module("tf_keras.src.legacy_tf_layers")
        normalization = importlib.import_module("tf_keras.src.legacy_tf_layers.normalization")
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "rankiqa needs the tf-keras package for tf-slim's batch norm: pip install 'tf-keras'"
        ) from e
    sys.modules[old] = package
    sys.modules[old + ".normalization"] = normalization


_register_legacy_keras_layers()

import tf_slim as slim  # noqa: E402

# slim builds graphs and sessions run them, but always in a `tf.Graph` of rankiqa's own (the
# training stage's, each scorer's): the host process keeps TensorFlow 2's eager mode, so a
# library user's own TensorFlow code runs as it would without rankiqa.
# slim's internals trigger deprecation notices on every graph build; they say nothing to users.
tf.logging.set_verbosity(tf.logging.ERROR)
warnings.filterwarnings("ignore", message="`layer.apply` is deprecated")

__all__ = ["tf", "slim"]
