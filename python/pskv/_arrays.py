"""Turning the caller's arrays into what the C calls take, without copies
where the call allows them.

Keys: any integer array, tensor, sequence or int. uint64 arrays pass as
they are; int64 ones are viewed as uint64 (the same bits: raw ids that
are negative as int64 keep their identity); other integer types are
widened (a copy: they cannot hold every id anyway). Non-contiguous arrays
are made contiguous (a copy). Floats and bools are refused.

Values (rows, gradients): float32 and C-contiguous, given as numpy arrays
or CPU tensors, are used in place. Any other dtype or layout of an array
is refused with a message saying how to convert: a hidden conversion
would copy every row on every call. Python lists are converted (they are
never a hot path's input).
"""
from __future__ import annotations

import numpy as np

from .errors import InvalidArgument

_EINVAL = InvalidArgument.code


def _from_tensor(x, what: str):
    if x.device.type != "cpu":
        raise InvalidArgument(_EINVAL, f"{what} is a tensor on {x.device}: pskv reads CPU "
                                       f"memory (move it with .cpu())")
    return x.detach().numpy()


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _key_bits(v) -> int:
    v = int(v)
    if not -(1 << 63) <= v < (1 << 64):
        raise InvalidArgument(_EINVAL, f"key {v} is outside uint64 and int64")
    return v & 0xFFFFFFFFFFFFFFFF


def integer(v, bits: int, what: str) -> int:
    """v as an unsigned integer of `bits` bits, or InvalidArgument (ctypes
    would wrap a negative or too large value silently)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise InvalidArgument(_EINVAL, f"{what} must be an integer, not {type(v).__name__}")
    v = int(v)
    if not 0 <= v < (1 << bits):
        raise InvalidArgument(_EINVAL, f"{what}={v}: expected 0..{(1 << bits) - 1}")
    return v


def keys(x) -> np.ndarray:
    """A 1-D C-contiguous uint64 array of the keys in x (flattened)."""
    if isinstance(x, np.ndarray):
        a = x
    elif _is_tensor(x):
        a = _from_tensor(x, "keys")
    elif isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        a = np.array([_key_bits(x)], dtype=np.uint64)
    elif isinstance(x, (list, tuple, range)) and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in x):
        # Python ints: each as its 64-bit pattern (ids beyond int64 and
        # negative raw ids in one list, which numpy alone makes float64).
        a = np.array([_key_bits(v) for v in x], dtype=np.uint64)
    else:
        a = np.asarray(x)
        if a.size == 0:
            a = a.astype(np.uint64)
    dt = a.dtype
    if dt == np.uint64:
        pass
    elif dt == np.int64:
        a = a.view(np.uint64) if a.flags.c_contiguous else np.ascontiguousarray(a).view(np.uint64)
    elif dt.kind in "iu":
        a = a.astype(np.uint64)
    else:
        raise InvalidArgument(_EINVAL, f"keys must be integers (uint64 bits or int64 raw ids), "
                                       f"not {dt}")
    if a.ndim != 1:
        a = a.reshape(-1)
    if not a.flags.c_contiguous or not a.flags.aligned:
        a = np.array(a, order="C")  # a fresh copy: contiguous and aligned
    return a


def rows(x, n: int, dim: int, what: str) -> np.ndarray:
    """x as n x dim float32, C-contiguous, in place (see the module doc)."""
    if isinstance(x, np.ndarray):
        a = x
    elif _is_tensor(x):
        a = _from_tensor(x, what)
    elif isinstance(x, (list, tuple)):
        a = np.asarray(x, dtype=np.float32)
    else:
        raise InvalidArgument(_EINVAL, f"{what} must be a float32 array or tensor, not "
                                       f"{type(x).__name__}")
    if a.dtype != np.float32:
        raise InvalidArgument(_EINVAL, f"{what} must be float32, not {a.dtype} (convert once "
                                       f"with .astype(numpy.float32) / .float(): pskv does not "
                                       f"copy rows behind your back)")
    if not a.flags.c_contiguous or not a.flags.aligned:
        raise InvalidArgument(_EINVAL, f"{what} must be C-contiguous and aligned "
                                       f"(numpy.ascontiguousarray / .contiguous())")
    if a.size != n * dim or (a.ndim > 1 and a.shape[-1] != dim):
        raise InvalidArgument(_EINVAL, f"{what} has shape {a.shape}: expected ({n}, {dim})")
    return a


def out_rows(out, n: int, dim: int) -> np.ndarray:
    """A float32 n x dim array to write into: a new one, or out checked."""
    if out is None:
        return np.empty((n, dim), dtype=np.float32)
    a = _from_tensor(out, "out") if _is_tensor(out) else out
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous or \
            not a.flags.aligned or not a.flags.writeable or a.size != n * dim:
        raise InvalidArgument(_EINVAL, f"out must be a writable C-contiguous float32 array of "
                                       f"{n} x {dim} values")
    return a


def buffer(x, what: str = "chunk") -> np.ndarray:
    """The bytes of a chunk (bytes, bytearray, memoryview, uint8 array or
    tensor) as a contiguous uint8 array, without a copy where possible."""
    if isinstance(x, np.ndarray):
        a = x
    elif _is_tensor(x):
        a = _from_tensor(x, what)
    else:
        try:
            a = np.frombuffer(x, dtype=np.uint8)
        except TypeError:
            raise InvalidArgument(_EINVAL, f"{what} must be bytes-like or a uint8 array, not "
                                           f"{type(x).__name__}") from None
    if a.dtype != np.uint8:
        a = a.view(np.uint8) if a.flags.c_contiguous else None
        if a is None:
            raise InvalidArgument(_EINVAL, f"{what} must be contiguous")
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return a.reshape(-1)


def addr(a: np.ndarray) -> int:
    return a.ctypes.data
