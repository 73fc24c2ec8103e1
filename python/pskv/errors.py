"""pskv.Error and one subclass per PSKV_E* code.

Every failed C call raises the subclass of its code, carrying ``code`` (the
negative int), ``name`` ("PSKV_EINVAL"), ``message`` (pskv_strerror) and
``detail`` (pskv_last_error: which key, value or owner was wrong). Checks
the binding makes itself (a float64 array where float32 is needed, a
closed store) raise the same classes with the code the C library would
give, so one ``except pskv.InvalidArgument`` covers both. Subclasses also
derive from the matching built-in exception where there is one (ValueError,
MemoryError, LookupError, OSError), so generic handlers work too.
"""
from __future__ import annotations

from . import _native


class Error(Exception):
    """A pskv call failed. ``code``, ``name``, ``message`` and ``detail``
    say how; ``str()`` gives all of them on one line."""

    code = 0

    def __init__(self, code: int | None = None, detail: str = ""):
        if code is None:
            code = type(self).code
        self.code = code
        self.name = _native.err_name(code).decode()
        self.message = _native.strerror(code).decode()
        self.detail = detail
        super().__init__(f"{self.name}: {self.message}" + (f": {detail}" if detail else ""))

    def __reduce__(self):  # survive pickling across processes
        return (_raise_type(self.code), (self.code, self.detail))


class InvalidArgument(Error, ValueError):
    """PSKV_EINVAL: a bad argument, configuration or value (also a call on a
    closed store)."""
    code = -1


class OutOfMemory(Error, MemoryError):
    """PSKV_ENOMEM."""
    code = -2


class NotFound(Error, LookupError):
    """PSKV_ENOTFOUND: no such table, checkpoint, store or node."""
    code = -3


class AlreadyExists(Error):
    """PSKV_EEXIST."""
    code = -4


class SchemaMismatch(Error):
    """PSKV_ESCHEMA: a configuration or chunk contradicts the table's schema."""
    code = -5


class NotSupported(Error):
    """PSKV_ENOTSUP: not supported by this build or store kind (a checkpoint
    of a memory-only store)."""
    code = -6


class Busy(Error):
    """PSKV_EBUSY: owned or in use elsewhere (``detail`` names the owner)."""
    code = -7


class IOFailure(Error, OSError):
    """PSKV_EIO."""
    code = -8


class Corrupt(Error):
    """PSKV_ECORRUPT: data failed its checksum or format check."""
    code = -9


class NoSpace(Error, OSError):
    """PSKV_ENOSPC: the spill cap or the disk is full."""
    code = -10


class VersionUnsupported(Error):
    """PSKV_EVERSION: written by a format version this library does not read."""
    code = -11


class OutOfRange(Error):
    """PSKV_ERANGE: a value out of range (a push whose step would not be
    finite; a buffer too small)."""
    code = -12


class Stale(Error):
    """PSKV_ESTALE: an export cursor outside the table's change log, or a
    chunk that does not continue from the replica's cursor."""
    code = -13


class CodecRange(Error):
    """PSKV_ECODEC: a value out of the chunk codec's range (fp16 beyond 65504)."""
    code = -14


_BY_CODE = {c.code: c for c in (InvalidArgument, OutOfMemory, NotFound, AlreadyExists,
                                SchemaMismatch, NotSupported, Busy, IOFailure, Corrupt, NoSpace,
                                VersionUnsupported, OutOfRange, Stale, CodecRange)}


def _raise_type(code: int):
    return _BY_CODE.get(code, Error)


def error(code: int, detail: str | None = None) -> Error:
    """The exception for a code; detail defaults to this thread's
    pskv_last_error (read right after the failed call)."""
    if detail is None:
        detail = _native.last_error().decode(errors="replace")
    return _raise_type(code)(code, detail)


def check(rc: int) -> int:
    """rc when it is not negative, else raise its exception."""
    if rc < 0:
        raise error(rc)
    return rc
