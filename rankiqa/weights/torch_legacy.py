"""Reads PyTorch's legacy (pre-1.6, not zip) ``.pth`` files into numpy, without PyTorch.

The format is five pickles in a row: a magic number, the protocol version, system info, the
object (tensors pickled as references to storages), and the storage keys; then each storage's
raw bytes, preceded by its element count. Only a state dict of float/int tensors is accepted:
the unpickler resolves no class beyond the handful such a file names, so a file that would run
code while loading is refused rather than executed. Strides are honoured (converted TF weights
are often stored channels-last).
"""

import collections
import pickle
import struct

import numpy as np

from rankiqa.errors import InputError

MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64,
                  "HalfStorage": np.float16, "LongStorage": np.int64, "IntStorage": np.int32,
                  "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
                  "BoolStorage": np.bool_}


class TorchFileError(InputError):
    """Not a legacy PyTorch state dict this reader can take."""


class _Tensor:
    def __init__(self, storage_key, offset, size, stride):
        self.storage_key, self.offset, self.size, self.stride = storage_key, offset, size, stride


def _rebuild_tensor_v2(storage_key, offset, size, stride, *unused):
    del unused  # requires_grad, backward hooks, metadata
    return _Tensor(storage_key, offset, tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, f, path):
        super().__init__(f)
        self.path, self.storages = path, {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return name
        raise TorchFileError(f"{self.path}: refusing to load {module}.{name} (only state dicts "
                             "of tensors are read)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchFileError(f"{self.path}: unexpected persistent id {pid!r:.60}")
        _, storage_type, key, _, _ = pid[:5]
        self.storages[key] = storage_type
        return key


def load_state_dict(path):
    """``{name: array}`` from a legacy ``.pth`` state dict, in the file's order.

    Raises:
      TorchFileError: a zip-format file, another object than a dict of tensors, or truncated.
    """
    with open(path, "rb") as f:
        head = f.read(4)
        if head.startswith(b"PK"):
            raise TorchFileError(f"{path}: a zip-format PyTorch file (torch >= 1.6); only the "
                                 "legacy format is read")
        f.seek(0)
        try:
            if pickle.load(f) != MAGIC:
                raise TorchFileError(f"{path}: not a PyTorch file (bad magic number)")
            pickle.load(f)  # protocol version
            info = pickle.load(f)
            if not info.get("little_endian", True):
                raise TorchFileError(f"{path}: big-endian file")
            unpickler = _StateDictUnpickler(f, path)
            state = unpickler.load()
            keys = pickle.load(f)
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as e:
            raise TorchFileError(f"{path}: not a readable PyTorch file ({e})") from None
        if not isinstance(state, dict):
            raise TorchFileError(f"{path}: holds a {type(state).__name__}, not a state dict")
        buffers = {}
        for key in keys:
            count_bytes = f.read(8)
            if len(count_bytes) < 8:
                raise TorchFileError(f"{path}: truncated (storage {key})")
            count, = struct.unpack("<q", count_bytes)
            dtype = np.dtype(STORAGE_DTYPES[unpickler.storages[key]])
            data = f.read(count * dtype.itemsize)
            if len(data) < count * dtype.itemsize:
                raise TorchFileError(f"{path}: truncated (storage {key})")
            buffers[key] = np.frombuffer(data, dtype)
    arrays = {}
    for name, tensor in state.items():
        if not isinstance(tensor, _Tensor):
            raise TorchFileError(f"{path}: entry {name} is not a tensor")
        flat = buffers[tensor.storage_key][tensor.offset:]
        itemsize = flat.dtype.itemsize
        arrays[name] = np.ascontiguousarray(np.lib.stride_tricks.as_strided(
            flat, tensor.size, [s * itemsize for s in tensor.stride]))
    return arrays
