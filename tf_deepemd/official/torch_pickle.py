"""Reads PyTorch ``.pth`` files as NumPy arrays, without PyTorch and without running code.

A file written by ``torch.save`` is a pickle whose tensors are rebuilt by
``torch._utils._rebuild_tensor_v2`` from "persistent id" references to raw
storages. Two layouts exist:

* zip (``torch.save`` since PyTorch 1.6): ``<name>/data.pkl`` holds the
  pickle, ``<name>/data/<key>`` each storage's raw bytes, ``<name>/byteorder``
  their byte order (``little`` when absent).
* legacy (PyTorch < 1.6, or ``_use_new_zipfile_serialization=False``): one
  stream of pickles (magic number, protocol version, system info, the
  object, the storage keys) followed by each storage as an int64 element
  count and its bytes.

Unpickling is restricted: `find_class` admits only the globals that
tensors, parameters and state dicts need and maps them to NumPy stand-ins;
any other global (``os.system``, ``builtins.eval``, ...) is refused with a
`CheckpointFormatError` before anything is called, so an untrusted file
cannot execute code.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

# torch.save's legacy stream starts with this pickled int, then this protocol version.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointFormatError(ValueError):
    """A ``.pth`` file that is not a plain tensor checkpoint, or is damaged."""


class _StorageType:
    """What the pickle names as ``torch.FloatStorage`` etc.: only its dtype."""

    def __init__(self, name):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _StorageRef:
    """A storage the pickle refers to; its bytes are read after unpickling."""

    def __init__(self, key, dtype, num_elements):
        self.key = key
        self.dtype = dtype
        self.num_elements = num_elements


class _TensorRef:
    """A strided view of a storage, materialised once the storages are read."""

    def __init__(self, storage, offset, shape, stride):
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.stride = stride

    def to_numpy(self, flat):
        """The tensor as a new C-contiguous array, from its 1-D storage ``flat``."""
        name = f"A tensor of shape {self.shape} on storage {self.storage.key!r}"
        if len(self.shape) != len(self.stride) or min(self.shape + self.stride, default=0) < 0:
            raise CheckpointFormatError(f"{name} has a bad stride {self.stride}.")
        if 0 in self.shape:
            return np.zeros(self.shape, flat.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
        if self.offset < 0 or last >= flat.size:
            # as_strided would read foreign memory: check before viewing.
            raise CheckpointFormatError(
                f"{name} (offset {self.offset}, stride {self.stride}) reads past the end of its "
                f"storage of {flat.size} elements: the file is damaged."
            )
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:],
            shape=self.shape,
            strides=tuple(s * flat.itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view, order="C")  # a copy; ascontiguousarray would make 0-d 1-d


def _rebuild_tensor(storage, storage_offset, size, stride, *unused_grad_hooks_metadata):
    if not isinstance(storage, _StorageRef):
        raise CheckpointFormatError("A tensor in the pickle is not built on a storage.")
    return _TensorRef(storage, int(storage_offset), tuple(map(int, size)), tuple(map(int, stride)))


def _rebuild_parameter(data, *unused_requires_grad_hooks):
    return data


_ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _Storages:
    """The storages a file's pickle references (``persistent_load``), by key."""

    def __init__(self):
        self.refs = {}

    def reference(self, pid):
        if not (
            isinstance(pid, tuple)
            and len(pid) in (5, 6)
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
        ):
            raise CheckpointFormatError(f"Unsupported storage reference {pid!r} in the pickle.")
        if len(pid) == 6 and pid[5] is not None:
            # The legacy format's last field: a view into another storage (PyTorch < 0.4).
            raise CheckpointFormatError(
                "Storage views of PyTorch < 0.4 are not supported: re-save the checkpoint with "
                "a recent PyTorch (torch.save(torch.load(path), new_path))."
            )
        dtype, key, num_elements = pid[1].dtype, str(pid[2]), int(pid[4])
        return self.refs.setdefault(key, _StorageRef(key, dtype, num_elements))


def _materialise(obj, arrays):
    """``obj`` with each tensor as an array; ``arrays``: storage key -> 1-D array."""
    if isinstance(obj, _TensorRef):
        return obj.to_numpy(arrays[obj.storage.key])
    if isinstance(obj, dict):
        return type(obj)((key, _materialise(value, arrays)) for key, value in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(value, arrays) for value in obj)
    return obj


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED_GLOBALS`; storages become `_StorageRef`s."""

    def __init__(self, stream, storages):
        super().__init__(stream)
        self._storages = storages

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            if module == "torch" and name.endswith("Storage"):
                raise CheckpointFormatError(
                    f"Unsupported tensor type torch.{name}; supported: "
                    f"{', '.join(sorted(_STORAGE_DTYPES))}."
                ) from None
            raise CheckpointFormatError(
                f"Refusing to load the global {module}.{name}: a tensor checkpoint needs only "
                "torch._utils._rebuild_tensor_v2, torch.*Storage and collections.OrderedDict. "
                "The file holds other Python objects (or code) and was not loaded."
            ) from None

    def persistent_load(self, pid):
        return self._storages.reference(pid)


def _unpickle(stream, storages):
    try:
        return _RestrictedUnpickler(stream, storages).load()
    except CheckpointFormatError:
        raise
    except Exception as error:  # truncated or corrupt pickle data
        raise CheckpointFormatError(f"Cannot read the checkpoint's pickle: {error!r}") from error


def _flat_array(raw, ref, byteorder):
    """Storage ``ref``'s elements from its raw bytes, as a native-order 1-D array."""
    stored = ref.dtype.newbyteorder("<" if byteorder == "little" else ">")
    if len(raw) < ref.num_elements * stored.itemsize:
        raise CheckpointFormatError(
            f"Storage {ref.key!r} has {len(raw)} bytes for {ref.num_elements} elements of "
            f"{stored.itemsize} bytes: the file is truncated or damaged."
        )
    return np.frombuffer(raw, stored, count=ref.num_elements).astype(ref.dtype.newbyteorder("="))


def _read_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        pickles = [name for name in names if name.endswith("data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointFormatError(
                f"{path} is a zip file but not a PyTorch checkpoint (expected one "
                f"'<name>/data.pkl', found {sorted(pickles)})."
            )
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode("ascii").strip()
        storages = _Storages()
        obj = _unpickle(io.BytesIO(archive.read(pickles[0])), storages)
        arrays = {}
        for key, ref in storages.refs.items():
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise CheckpointFormatError(f"{path} has no entry {entry!r} for a storage.")
            arrays[key] = _flat_array(archive.read(entry), ref, byteorder)
    return _materialise(obj, arrays)


def _read_legacy(path, stream):
    """The pre-1.6 stream: magic, protocol, system info, object, keys, then the storages."""
    storages = _Storages()
    header = [_unpickle(stream, storages) for _ in range(3)]
    if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL or not isinstance(header[2], dict):
        raise CheckpointFormatError(f"{path} is not a PyTorch checkpoint (zip or legacy format).")
    byteorder = "little" if header[2].get("little_endian", True) else "big"
    obj = _unpickle(stream, storages)
    arrays = {}
    for key in map(str, _unpickle(stream, storages)):
        if key not in storages.refs:
            raise CheckpointFormatError(f"{path}: storage {key!r} is not referenced by the pickle.")
        size_bytes = stream.read(8)
        if len(size_bytes) != 8:
            raise CheckpointFormatError(f"{path} is truncated at storage {key!r}.")
        (num_elements,) = struct.unpack("<q" if byteorder == "little" else ">q", size_bytes)
        ref = storages.refs[key]
        if num_elements != ref.num_elements:
            raise CheckpointFormatError(
                f"{path}: storage {key!r} holds {num_elements} elements, the pickle says "
                f"{ref.num_elements}."
            )
        arrays[key] = _flat_array(stream.read(num_elements * ref.dtype.itemsize), ref, byteorder)
    missing = sorted(set(storages.refs) - set(arrays))
    if missing:
        raise CheckpointFormatError(f"{path} lacks the data of storages {missing}.")
    return _materialise(obj, arrays)


def load_pth(path):
    """The object a ``torch.save`` file holds, with every tensor as a NumPy array.

    Needs no PyTorch and executes no code from the file (see module doc).

    Args:
      path: a ``.pth`` file in the zip (PyTorch >= 1.6) or legacy layout.

    Returns:
      The saved object (dicts, OrderedDicts, lists, tuples, numbers,
      strings) with tensors as C-contiguous arrays of the tensor's dtype
      and shape.

    Raises:
      CheckpointFormatError (a ValueError): not a PyTorch file, damaged,
        an unsupported storage type, or any Python global other than the
        tensor-rebuild and storage ones.
      OSError: the file cannot be read.
    """
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    with open(path, "rb") as stream:
        return _read_legacy(path, stream)
