"""Stores, tables, checkpoints and iteration over the C library.

Ownership follows the C API: a Store owns its tables (a Table stays valid
until the store closes; after that every call on it raises
pskv.InvalidArgument instead of touching freed memory). Iterators and
exports are the caller's; after their store closes their calls raise too.

Threads: each method releases the GIL for its C call (ctypes does), so
row calls from several Python threads run in parallel, as the C library
allows. close() must not run concurrently with other calls on the store,
its tables, iterators or exports (as pskv_close).
"""
from __future__ import annotations

import ctypes
import os
import weakref
from collections import namedtuple
from typing import Optional, Tuple

import numpy as np

from . import _arrays, _native as N
from ._handle import Owned, refuse_copies
from .errors import InvalidArgument, OutOfRange, check, error

_EINVAL = InvalidArgument.code
_ERANGE = OutOfRange.code

TableStats = namedtuple("TableStats", N._TABLE_STATS)
TableStats.__doc__ = "Counters of a table since it was opened (pskv_table_stats)."
StoreStats = namedtuple("StoreStats", N._STORE_STATS)
StoreStats.__doc__ = "Store-wide totals (pskv_store_stats)."
TableDesc = namedtuple("TableDesc", "name schema dim state_floats row_bytes open rows")
TableDesc.__doc__ = ("A table a store holds: name, schema (its config string), dim, "
                     "state_floats, row_bytes, open (in this store), rows.")
TableInfo = namedtuple("TableInfo", "dim state_floats row_bytes shards config schema")
TableInfo.__doc__ = ("Static facts of a table: config is the canonical string of every option, "
                     "schema the keys that matter for it.")


def _b(s) -> Optional[bytes]:
    if s is None:
        return None
    if isinstance(s, os.PathLike):
        s = os.fspath(s)
    return s.encode() if isinstance(s, str) else bytes(s)


def _options_string(fn, opts) -> str:
    buf = ctypes.create_string_buffer(4096)
    check(fn(ctypes.byref(opts), buf, len(buf)))
    return buf.value.decode()


def _closed(what: str):
    return InvalidArgument(_EINVAL, f"the {what} is closed")


def _stats(struct_type, tuple_type, fn, h):
    st = struct_type()
    check(fn(h, ctypes.byref(st)))
    return tuple_type(*(getattr(st, f) for f in tuple_type._fields))


def _meta_bytes(meta):
    if meta is None:
        return None, 0
    try:
        b = meta if isinstance(meta, bytes) else bytes(memoryview(meta).cast("B"))
    except TypeError:
        raise InvalidArgument(_EINVAL, f"meta must be bytes-like, not "
                                       f"{type(meta).__name__}") from None
    return b, len(b)


@refuse_copies
class Store:
    """An open pskv store: memory-only (path None), scratch
    (``durability=none``) or durable (a directory). Use as a context
    manager, or call close(). See pskv.open."""

    def __init__(self, path=None, config: str = ""):
        h = ctypes.c_void_p()
        check(N.open_(_b(path), _b(config or None), ctypes.byref(h)))
        self._h = h.value
        self.path = None if path is None else os.fspath(path)
        # Weak: a table refers to its store, and a store dropped without
        # close() must not wait for the cycle collector to be closed.
        self._tables = weakref.WeakValueDictionary()

    # -- life

    def close(self, discard: bool = False) -> None:
        """Close the store and its tables. A durable store checkpoints
        first (pskv_close); discard=True writes nothing and goes back to
        the last committed checkpoint on the next open, as after a crash
        (pskv_close_discard: for failure paths). Closing twice is a no-op."""
        h, self._h = self._h, None
        if h is None:
            return
        for t in list(self._tables.values()):
            t._h = None
        self._tables.clear()
        (N.close_discard if discard else N.close)(h)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def closed(self) -> bool:
        return self._h is None

    def _handle(self):
        if self._h is None:
            raise _closed("store")
        return self._h

    def __repr__(self):
        state = "closed" if self._h is None else "open"
        return f"<pskv.Store {self.path or 'memory-only'} ({state})>"

    # -- tables

    def table(self, name: str, config: Optional[str] = None) -> "Table":
        """Create the table or open it (pskv_table_open). config sets dim
        (needed to create), optimizer and its hyperparameters, init, seed,
        shards, update, staleness; reopening with a contradicting schema
        raises pskv.SchemaMismatch. The same name gives the same object."""
        t = self._tables.get(name)
        if t is not None and config is None:
            return t
        h = ctypes.c_void_p()
        check(N.table_open(self._handle(), _b(name), _b(config), ctypes.byref(h)))
        if t is None:
            t = self._tables[name] = Table(self, name, h.value)
        return t

    def find_table(self, name: str) -> "Table":
        """The open table of that name, without creating it (pskv.NotFound)."""
        t = self._tables.get(name)
        if t is None:
            h = ctypes.c_void_p()
            check(N.table_find(self._handle(), _b(name), ctypes.byref(h)))
            t = self._tables[name] = Table(self, name, h.value)
        return t

    def __getitem__(self, name: str) -> "Table":
        return self.find_table(name)

    def tables(self) -> list:
        """Every table the store holds (a durable store: persisted ones
        too, opened or not), as TableDesc, in name order."""
        return _list_tables(lambda out, cap, n: N.store_tables(self._handle(), out, cap, n))

    def stats(self) -> StoreStats:
        return _stats(N.StoreStats, StoreStats, N.store_stats_get, self._handle())

    # -- checkpoints

    def checkpoint(self, meta=None) -> int:
        """Commit a point-in-time checkpoint of every table (durable stores;
        pskv.NotSupported otherwise) and return its seq. meta (bytes-like)
        is committed in the same transaction (pskv_checkpoint_with_meta);
        None keeps the last metadata as it is."""
        h = self._handle()
        if meta is None:
            check(N.checkpoint(h))
        else:
            b, n = _meta_bytes(meta)
            check(N.checkpoint_with_meta(h, b, n))
        return self.stats().checkpoint_seq

    def checkpoint_start(self, meta=None) -> "Checkpoint":
        """Take the checkpoint's instant and return while a thread writes
        it (pskv_checkpoint_start). Call .wait() on the result (its seq);
        training may go on at once."""
        b, n = _meta_bytes(meta)
        h = ctypes.c_void_p()
        check(N.checkpoint_start(self._handle(), b, n, ctypes.byref(h)))
        return Checkpoint(h.value)

    def checkpoint_meta(self) -> Tuple[bytes, int]:
        """(bytes, seq): the metadata of the last checkpoint that carried
        some, and the seq that committed it (pskv.NotFound: none did)."""
        h = self._handle()
        n = ctypes.c_size_t()
        seq = ctypes.c_uint64()
        rc = N.checkpoint_meta(h, None, 0, ctypes.byref(n), ctypes.byref(seq))
        while rc == _ERANGE:
            buf = ctypes.create_string_buffer(max(n.value, 1))
            rc = N.checkpoint_meta(h, buf, len(buf), ctypes.byref(n), ctypes.byref(seq))
            if rc == 0:
                return buf.raw[:n.value], seq.value
        check(rc)
        return b"", seq.value

    def backup(self, dest) -> None:
        """A compacted copy of the last committed checkpoint into dest, which
        pskv.open opens (pskv_backup)."""
        check(N.backup(self._handle(), _b(dest)))


@refuse_copies
class Checkpoint:
    """An asynchronous checkpoint (Store.checkpoint_start). wait() gives its
    result: the seq it committed as, or raises its error. Waited for at
    garbage collection if the caller never did."""

    def __init__(self, h):
        self._h = h
        self._seq = None

    def done(self) -> bool:
        """True once the commit has ended (wait will not block)."""
        if self._h is None:
            return True
        return check(N.checkpoint_done(self._h)) == 1

    def wait(self) -> int:
        """Wait for the commit; return the seq (again on later calls)."""
        if self._h is None:
            if isinstance(self._seq, BaseException):
                raise self._seq
            return self._seq
        seq = ctypes.c_uint64()
        h, self._h = self._h, None
        rc = N.checkpoint_wait(h, ctypes.byref(seq))
        if rc < 0:
            self._seq = error(rc)
            raise self._seq
        self._seq = seq.value
        return self._seq

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.wait()

    def __del__(self):
        if getattr(self, "_h", None) is not None:
            try:
                self.wait()
            except Exception:
                pass


def _list_tables(call) -> list:
    n = ctypes.c_size_t()
    rc = call(None, 0, ctypes.byref(n))  # sizing: PSKV_ERANGE when there are tables
    if rc != _ERANGE:
        check(rc)
    while True:
        arr = (N.TableDesc * max(n.value, 1))()
        rc = call(arr, len(arr), ctypes.byref(n))
        if rc != _ERANGE:
            break
    check(rc)
    out = []
    for d in arr[:n.value]:
        schema = _options_string(N.table_options_describe, d.options)
        out.append(TableDesc(d.name.decode(), schema, d.dim, d.state_floats, d.row_bytes,
                             bool(d.open), d.rows))
    return out


def dir_tables(path) -> list:
    """The tables of the durable store in path, read beside its owner
    without opening it (pskv_dir_tables), as TableDesc."""
    return _list_tables(lambda out, cap, n: N.dir_tables(_b(path), out, cap, n))


def compact(path) -> Tuple[int, int]:
    """Compact the closed durable store in path in place (pskv_compact);
    returns the data file's bytes before and after."""
    before, after = ctypes.c_uint64(), ctypes.c_uint64()
    check(N.compact(_b(path), ctypes.byref(before), ctypes.byref(after)))
    return before.value, after.value


class Table:
    """A table of a store: uint64 keys to float32 rows of `dim` weights
    plus optimizer state. Row calls take a batch of keys (any integer
    array; see pskv._arrays) and float32 C-contiguous rows, and release
    the GIL while they run. Get one with Store.table. A copy of a module
    holding a table shares the table (copy and deepcopy return it); it
    cannot be pickled (its rows live in the store)."""

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce_ex__(self, protocol):
        raise TypeError("a pskv.Table cannot be pickled: its rows live in its store "
                        "(checkpoint the store instead)")

    def __init__(self, store: Store, name: str, h):
        self._store = store
        self._h = h
        self.name = name
        info = N.TableInfo()
        check(N.table_info_get(h, ctypes.byref(info)))
        self.dim = info.dim
        self.state_floats = info.state_floats
        self.row_bytes = info.row_bytes

    def __repr__(self):
        return f"<pskv.Table {self.name!r} dim={self.dim}{' (closed)' if self._h is None else ''}>"

    @property
    def store(self) -> Store:
        return self._store

    def _handle(self):
        h = self._h
        if h is None:
            raise _closed("table's store")
        return h

    # -- facts

    def info(self) -> TableInfo:
        i = N.TableInfo()
        check(N.table_info_get(self._handle(), ctypes.byref(i)))
        return TableInfo(i.dim, i.state_floats, i.row_bytes, i.shards,
                         _options_string(N.table_options_format, i.options),
                         _options_string(N.table_options_describe, i.options))

    def stats(self) -> TableStats:
        return _stats(N.TableStats, TableStats, N.table_stats_get, self._handle())

    def __len__(self) -> int:
        return N.table_rows(self._handle())

    @property
    def rows(self) -> int:
        """Rows in the table (resident, spilled or only in LMDB)."""
        return N.table_rows(self._handle())

    @property
    def version(self) -> int:
        """The last version a row change was stamped with (export cursors)."""
        return N.table_version(self._handle())

    # -- rows

    def pull(self, keys, out=None) -> np.ndarray:
        """The weights of keys as (n, dim) float32, creating missing rows
        from the initializer (pskv_pull). out: an array to fill instead."""
        h = self._handle()
        k = _arrays.keys(keys)
        o = _arrays.out_rows(out, k.size, self.dim)
        rc = N.pull(h, k.ctypes.data, k.size, o.ctypes.data)
        if rc < 0:
            raise error(rc)
        return o

    def get(self, keys, out=None) -> Tuple[np.ndarray, np.ndarray]:
        """(values, found): like pull but never creates; rows not found are
        zeros and found[i] is False (pskv_get)."""
        h = self._handle()
        k = _arrays.keys(keys)
        o = _arrays.out_rows(out, k.size, self.dim)
        found = np.empty(k.size, dtype=np.bool_)
        rc = N.get(h, k.ctypes.data, k.size, o.ctypes.data, found.ctypes.data)
        if rc < 0:
            raise error(rc)
        return o, found

    def push(self, keys, grads) -> None:
        """Apply gradients with the table's optimizer (pskv_push); repeated
        keys are summed first. On an update=sync table the gradients are
        accumulated until step(). pskv.OutOfRange: some rows' steps would
        not be finite and were left as they were (the others applied)."""
        h = self._handle()
        k = _arrays.keys(keys)
        g = _arrays.rows(grads, k.size, self.dim, "grads")
        check(N.push(h, k.ctypes.data, k.size, g.ctypes.data))

    def push_at(self, keys, grads, step: int) -> None:
        """A push of gradients computed at training step `step`; a table
        with staleness=S drops those more than S steps behind the row's
        newest (pskv_push_at; counted in stats().stale_dropped)."""
        h = self._handle()
        k = _arrays.keys(keys)
        g = _arrays.rows(grads, k.size, self.dim, "grads")
        check(N.push_at(h, k.ctypes.data, k.size, g.ctypes.data,
                        _arrays.integer(step, 64, "step")))

    def step(self) -> None:
        """update=sync tables: apply every accumulated row once (pskv_step)."""
        check(N.step(self._handle()))

    def put(self, keys, values) -> None:
        """Overwrite the weights of keys (pskv_put); new rows get the
        optimizer's initial state, existing rows keep theirs."""
        h = self._handle()
        k = _arrays.keys(keys)
        v = _arrays.rows(values, k.size, self.dim, "values")
        check(N.put(h, k.ctypes.data, k.size, v.ctypes.data))

    def erase(self, keys) -> None:
        """Remove the rows of keys; absent keys are ignored (pskv_erase)."""
        h = self._handle()
        k = _arrays.keys(keys)
        check(N.erase(h, k.ctypes.data, k.size))

    def prefetch(self, keys) -> None:
        """Start bringing spilled rows of keys into DRAM and return at once
        (pskv_prefetch): the next pull of them finds them resident."""
        h = self._handle()
        k = _arrays.keys(keys)
        check(N.prefetch(h, k.ctypes.data, k.size))

    def truncate(self) -> int:
        """Erase every row; returns how many (pskv_table_truncate)."""
        n = ctypes.c_uint64()
        check(N.table_truncate(self._handle(), ctypes.byref(n)))
        return n.value

    def reshard(self, shards: int) -> None:
        """Change the shard count online, every row kept (pskv_table_reshard)."""
        check(N.table_reshard(self._handle(), _arrays.integer(shards, 32, "shards")))

    # -- iteration

    def iterate(self, state: bool = False) -> "RowIterator":
        """Every row once: (key, weights) or, with state=True, (key,
        weights, state) (pskv_iter_*). One C call per row: for bulk copies
        an export (export(0, "payload=rows")) is much faster."""
        return RowIterator(self, state)

    def __iter__(self):
        with self.iterate() as it:
            yield from it

    # -- moving rows

    def export(self, since: int = 0, config: str = "", ring=None, node: Optional[int] = None):
        """A delta export of the rows changed after version `since` (0:
        every row) as chunks; iterate it for uint8 arrays. config:
        "payload=weights|rows codec=fp32|fp16|bf16|int8 lz4=on|off
        chunk_bytes=SIZE". ring and node: only the keys ring routes to node.
        See pskv.Export."""
        from ._transfer import Export
        return Export(self, since, config, ring, node)

    def apply(self, chunk, mode: str = "replace", any_table: bool = False,
              since: Optional[int] = None) -> None:
        """Apply one chunk (pskv_apply; pskv_apply_since when since is
        given): mode "replace" writes rows as sent, "push" applies them as
        gradients, "add" adds them to the weights. any_table: accept a
        chunk exported from a table of another name."""
        from ._transfer import apply_mode
        h = self._handle()
        c = _arrays.buffer(chunk)
        m = apply_mode(mode, any_table)
        if since is None:
            check(N.apply(h, c.ctypes.data, c.size, m))
        else:
            check(N.apply_since(h, c.ctypes.data, c.size, m, _arrays.integer(since, 64, "since")))


class RowIterator(Owned):
    """An iterator over a table's rows (Table.iterate); close it or use it
    as a context manager to free it early."""

    _free = N.iter_destroy

    def __init__(self, table: Table, state: bool):
        h = ctypes.c_void_p()
        check(N.iter_create(table._handle(), ctypes.byref(h)))
        self._h = h.value
        self._table = table  # its store stays open while the iterator lives
        self._dim = table.dim
        self._sf = table.state_floats if state else 0
        self._state = state

    def __iter__(self):
        return self

    def __next__(self):
        if self._h is None:
            raise StopIteration
        key = ctypes.c_uint64()
        w = np.empty(self._dim, dtype=np.float32)
        s = np.empty(self._sf, dtype=np.float32) if self._state else None
        rc = N.iter_next(self._h, ctypes.byref(key), w.ctypes.data,
                         s.ctypes.data if s is not None and self._sf else None)
        if rc == 0:
            self.close()
            raise StopIteration
        if rc < 0:
            raise error(rc)
        return (key.value, w, s) if self._state else (key.value, w)


def open(path=None, config: str = "") -> Store:  # noqa: A001 (the contract's name)
    """Open a store (pskv_open). path None: memory-only. A directory:
    durable (LMDB checkpoints) unless config says durability=none (a
    scratch store with a spill tier). config: "memory_budget=8G
    spill_max=... at_seq=N undo_keep=K changes=N" (docs/API.md)."""
    return Store(path, config)
