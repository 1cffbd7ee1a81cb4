"""TensorFlow 2.x / tf-slim 1.1.0 shims, applied once before anything imports `tf_slim`.

tf-slim 1.1.0 (its last release, 2020) reaches into private TensorFlow modules that TF 2.16+
reorganised. Each shim below aliases a moved name to its public twin, and only where the name is
missing, so that an older TensorFlow that still has it is left untouched.

Import this module (``from rankiqa.compat import tf, slim``) instead of importing `tf_slim`
directly; every rankiqa module does.
"""

import importlib
import os
import sys
import warnings

# TensorFlow's C++ INFO lines (oneDNN, CUDA stubs) drown the CLI's own output; users can still
# ask for them by setting the variable themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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

# Graph-mode (TF1) semantics everywhere: slim builds graphs, and sessions run them.
tf.disable_eager_execution()
# slim's internals trigger deprecation notices on every graph build; they say nothing to users.
tf.logging.set_verbosity(tf.logging.ERROR)
warnings.filterwarnings("ignore", message="`layer.apply` is deprecated")

__all__ = ["tf", "slim"]
