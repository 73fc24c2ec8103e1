"""pskv: sparse embedding tables (uint64 id -> float32 row + optimizer
state) with a DRAM budget, an NVMe spill tier and point-in-time durable
checkpoints, from Python.

A ctypes binding of libpskv: no compiled extension, so no tie to a
Python or torch ABI. numpy arrays go in and out without copies where the
C call allows. Errors raise pskv.Error subclasses (pskv.InvalidArgument,
pskv.NotFound, ...), one per PSKV_E* code.

    import pskv
    with pskv.open() as s:                       # memory-only store
        t = s.table("emb", "dim=16 optimizer=adagrad lr=0.05")
        rows = t.pull([1, 2, 3])                 # (3, 16) float32
        t.push([1, 2, 3], grads)                 # grads: (3, 16) float32

The library loaded is pskv.library_path (PSKV_LIBRARY overrides it; see
docs/PYTHON.md). PyTorch modules live in pskv.torch.
"""
from __future__ import annotations

from . import _native
from ._store import (Checkpoint, RowIterator, Store, StoreStats, Table, TableDesc, TableInfo,
                     TableStats, compact, dir_tables, open)
from ._transfer import (CODECS, Chunk, ChunkInfo, Export, Ring, chunk_decode, chunk_encode,
                        chunk_info, feature_id, feature_ids, grad_encode)
from .errors import (AlreadyExists, Busy, CodecRange, Corrupt, Error, InvalidArgument,
                     IOFailure, NoSpace, NotFound, NotSupported, OutOfMemory, OutOfRange,
                     SchemaMismatch, Stale, VersionUnsupported)

#: The version of libpskv loaded, e.g. "0.4.0" (the package has the same).
library_version = _native.version_string().decode()
__version__ = library_version
#: The file the library was loaded from.
library_path = _native.library_path

OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad", "adam", "ftrl", "none")
UPDATE_MODES = ("async", "sync")

__all__ = [
    "open", "Store", "Table", "Checkpoint", "RowIterator", "Export", "Ring", "compact",
    "dir_tables", "chunk_encode", "chunk_decode", "chunk_info", "grad_encode", "feature_id",
    "feature_ids", "Chunk", "ChunkInfo", "TableStats", "StoreStats", "TableDesc", "TableInfo",
    "CODECS", "OPTIMIZERS", "UPDATE_MODES", "library_version", "library_path",
    "Error", "InvalidArgument", "OutOfMemory", "NotFound", "AlreadyExists", "SchemaMismatch",
    "NotSupported", "Busy", "IOFailure", "Corrupt", "NoSpace", "VersionUnsupported",
    "OutOfRange", "Stale", "CodecRange",
]
