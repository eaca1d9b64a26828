"""A pickle reader that builds plain data and numpy arrays and refuses everything else.

The CIFAR batches and Robust UE's released poisons are pickles, and a pickle can run arbitrary
code on load (`os.system` as a `__reduce__`). This unpickler resolves only the handful of globals
that numpy arrays need; anything else raises `DataError` before it can be called.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any

import numpy as np

from ..core.errors import DataError, one_line
from ..core.safe import DEFAULT_MAX_BYTES, read_bounded

_HAS_NUMPY_CORE_PRIVATE = hasattr(np, "_core")

# The only callables a pickle of dicts, lists, bytes and numpy arrays references (besides
# _reconstruct and ndarray, which are handed out guarded, below).
_NUMPY_ALLOWED = {
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


def _latin1_encode(s: str, encoding: str = "latin1") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(str, "latin1"); any other
    # codec name would reach arbitrary codec machinery, so only latin-1 is honoured.
    if encoding.lower().replace("-", "").replace("_", "") not in {"latin1", "iso88591"}:
        raise RefusedGlobal(f"refused _codecs.encode with encoding {encoding!r}")
    return s.encode("latin1")


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a callable outside the allow-list: it would run code."""


class _Ndarray:
    """What a pickle gets for numpy.ndarray. numpy's pickles only pass the class to _reconstruct;
    calling it would allocate an array of any shape the file names, before any check."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RefusedGlobal("refused a direct call of numpy.ndarray (numpy's pickles never make one)")


_NDARRAY = _Ndarray()


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    # numpy pickles an array as _reconstruct(ndarray, (0,), b"b") and then sets its real state,
    # whose data is in the file; any other shape would be allocated here, unchecked.
    if subtype is not _NDARRAY or not isinstance(shape, tuple) or 0 not in shape:
        raise RefusedGlobal(f"refused numpy _reconstruct of shape {shape!r} (numpy writes an empty one)")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain data and numpy arrays: every other global is refused."""
    def find_class(self, module: str, name: str) -> Any:
        if module in {"numpy.core.multiarray", "numpy._core.multiarray"} and name == "_reconstruct":
            return _reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY
        if (module, name) in _NUMPY_ALLOWED:
            # Pickles written by numpy 1 (the CIFAR batches) name numpy.core, which numpy 2 keeps
            # only as a deprecated alias of numpy._core.
            if module.startswith("numpy.core.") and _HAS_NUMPY_CORE_PRIVATE:
                module = "numpy._core." + module[len("numpy.core."):]
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise RefusedGlobal(f"refused to load global {module}.{name}")


def restricted_load(data: bytes, source: str | os.PathLike[str] = "<bytes>",
                    encoding: str = "bytes") -> Any:
    """Unpickle `data` allowing only plain data and numpy arrays.

    `encoding="bytes"` keeps Python 2 strings (the CIFAR batches) as bytes, as the official
    loading snippet does.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except RefusedGlobal as e:
        raise DataError(source, f"unsafe or invalid pickle: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError, RecursionError) as e:
        raise DataError(source, f"truncated or corrupted pickle ({type(e).__name__}: {one_line(e)})") from None


def restricted_load_file(path: str | os.PathLike[str], encoding: str = "bytes",
                         max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """`restricted_load` of a regular file of at most `max_bytes` (a FIFO or device is refused)."""
    return restricted_load(read_bounded(path, max_bytes), path, encoding)
