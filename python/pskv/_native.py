"""Loading libpskv and declaring its C entry points for ctypes.

Which library is loaded, first match wins:

1. the file the environment variable ``PSKV_LIBRARY`` names;
2. a ``libpskv.so*`` inside this package (the wheel built by pip puts the
   library there);
3. the library ``meson install`` installed beside this package (its path is
   written into ``_install.py`` at install time);
4. a build tree next to the package's source: ``<repo>/build/libpskv.so``
   when the package is used with ``PYTHONPATH=python`` from a checkout;
5. the system's ``libpskv.so.1`` (the dynamic loader's search path).

The C header is the reference for every signature declared here; a
library older than the binding needs is refused at import with a message
naming both versions.
"""
from __future__ import annotations

import ctypes
import glob
import os
from ctypes import (POINTER, Structure, c_char, c_char_p, c_double, c_float, c_int,
                    c_size_t, c_uint, c_uint32, c_uint64, c_void_p)

#: The oldest library this binding works with (pskv_version() encoding).
MIN_VERSION = (0, 4, 0)

NAME_MAX = 255


def _candidates():
    env = os.environ.get("PSKV_LIBRARY")
    if env:
        yield env, "PSKV_LIBRARY"
        return
    here = os.path.dirname(os.path.abspath(__file__))
    for path in sorted(glob.glob(os.path.join(here, "libpskv.so*"))):
        yield path, "the package directory"
    try:
        from . import _install  # written by meson install
        yield _install.LIBRARY, "the meson install prefix"
    except ImportError:
        pass
    repo = os.path.dirname(os.path.dirname(here))
    build = os.path.join(repo, "build", "libpskv.so")
    if os.path.exists(build):
        yield build, "the build tree"
    yield "libpskv.so.1", "the dynamic loader's search path"


def _load():
    tried = []
    for path, where in _candidates():
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append(f"{path} ({where}): {e}")
    raise ImportError("pskv: cannot load libpskv; tried:\n  " + "\n  ".join(tried) +
                      "\nSet PSKV_LIBRARY to the path of libpskv.so, or build it "
                      "(meson setup build && ninja -C build).")


lib, library_path = _load()


# ---------------------------------------------------------------- structs
# Layouts follow include/pskv.h field by field (natural alignment, as the
# C compiler lays them out); tests check them against the library.

class StoreOptions(Structure):
    _fields_ = [("memory_budget", c_uint64), ("spill_max", c_uint64), ("durability", c_int),
                ("map_size", c_uint64), ("at_seq_set", c_uint32), ("undo_off", c_uint32),
                ("at_seq", c_uint64), ("changes", c_uint64), ("undo_keep", c_uint32),
                ("reserved", c_uint32 * 6)]


class TableOptions(Structure):
    _fields_ = [("dim", c_uint32), ("optimizer", c_int), ("lr", c_float), ("eps", c_float),
                ("initial_accumulator", c_float), ("beta1", c_float), ("beta2", c_float),
                ("l1", c_float), ("l2", c_float), ("lr_power", c_float), ("init", c_int),
                ("init_a", c_float), ("init_b", c_float), ("seed", c_uint64),
                ("shards", c_uint32), ("init_gen", c_uint32), ("update", c_uint32),
                ("staleness_on", c_uint32), ("staleness", c_uint32),
                ("reserved", c_uint32 * 11)]


class TableDesc(Structure):
    _fields_ = [("name", c_char * (NAME_MAX + 1)), ("options", TableOptions),
                ("dim", c_uint32), ("state_floats", c_uint32), ("row_bytes", c_uint32),
                ("open", c_int), ("rows", c_uint64), ("reserved", c_uint64 * 4)]


class TableInfo(Structure):
    _fields_ = [("dim", c_uint32), ("state_floats", c_uint32), ("row_bytes", c_uint32),
                ("shards", c_uint32), ("options", TableOptions), ("reserved", c_uint32 * 8)]


_TABLE_STATS = ("rows row_bytes dram_bytes rows_created rows_erased pulled pushed got put "
                "get_misses reshards rows_evicted rows_spilled spill_reads spill_writes "
                "prefetch_errors spill_read_ns spill_write_ns spill_index_bytes rows_cold "
                "cold_lookups push_nonfinite exported stepped stale_dropped").split()


class TableStats(Structure):
    _fields_ = [(n, c_uint64) for n in _TABLE_STATS] + [("reserved", c_uint64 * 6)]


_STORE_STATS = ("tables rows row_bytes dram_bytes memory_budget resident_bytes rows_evicted "
                "spill_bytes checkpoint_seq checkpoint_rows checkpoint_ns checkpoints_failed "
                "db_bytes map_grows lmdb_reopens stale_readers").split()


class StoreStats(Structure):
    _fields_ = [(n, c_uint64) for n in _STORE_STATS] + [("reserved", c_uint64 * 8)]


class ChunkInfo(Structure):
    _fields_ = [("kind", c_uint32), ("codec", c_uint32), ("dim", c_uint32),
                ("state_floats", c_uint32), ("optimizer", c_int), ("rows", c_uint32),
                ("tombstones", c_uint32), ("since", c_uint64), ("version", c_uint64),
                ("lz4", c_uint32), ("bytes", c_size_t), ("reserved", c_uint32 * 8)]


# ---------------------------------------------------------------- functions

_p = c_void_p        # handles and array pointers are passed as addresses
_u64p = POINTER(c_uint64)
_szp = POINTER(c_size_t)


def _fn(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


strerror = _fn("pskv_strerror", c_char_p, c_int)
err_name = _fn("pskv_err_name", c_char_p, c_int)
last_error = _fn("pskv_last_error", c_char_p)
version = _fn("pskv_version", c_uint)
version_string = _fn("pskv_version_string", c_char_p)

store_options_init = _fn("pskv_store_options_init", None, POINTER(StoreOptions))
table_options_init = _fn("pskv_table_options_init", None, POINTER(TableOptions))
table_options_parse = _fn("pskv_table_options_parse", c_int, POINTER(TableOptions), c_char_p)
table_options_format = _fn("pskv_table_options_format", c_int, POINTER(TableOptions), _p,
                           c_size_t)
table_options_describe = _fn("pskv_table_options_describe", c_int, POINTER(TableOptions), _p,
                             c_size_t)

open_ = _fn("pskv_open", c_int, c_char_p, c_char_p, POINTER(c_void_p))
close = _fn("pskv_close", None, _p)
close_discard = _fn("pskv_close_discard", None, _p)
table_open = _fn("pskv_table_open", c_int, _p, c_char_p, c_char_p, POINTER(c_void_p))
table_find = _fn("pskv_table_find", c_int, _p, c_char_p, POINTER(c_void_p))
store_tables = _fn("pskv_store_tables", c_int, _p, POINTER(TableDesc), c_size_t, _szp)
dir_tables = _fn("pskv_dir_tables", c_int, c_char_p, POINTER(TableDesc), c_size_t, _szp)
table_info_get = _fn("pskv_table_info_get", c_int, _p, POINTER(TableInfo))
table_rows = _fn("pskv_table_rows", c_uint64, _p)
table_version = _fn("pskv_table_version", c_uint64, _p)
table_stats_get = _fn("pskv_table_stats_get", c_int, _p, POINTER(TableStats))
store_stats_get = _fn("pskv_store_stats_get", c_int, _p, POINTER(StoreStats))

pull = _fn("pskv_pull", c_int, _p, _p, c_size_t, _p)
push = _fn("pskv_push", c_int, _p, _p, c_size_t, _p)
step = _fn("pskv_step", c_int, _p)
push_at = _fn("pskv_push_at", c_int, _p, _p, c_size_t, _p, c_uint64)
get = _fn("pskv_get", c_int, _p, _p, c_size_t, _p, _p)
put = _fn("pskv_put", c_int, _p, _p, c_size_t, _p)
erase = _fn("pskv_erase", c_int, _p, _p, c_size_t)
prefetch = _fn("pskv_prefetch", c_int, _p, _p, c_size_t)
table_truncate = _fn("pskv_table_truncate", c_int, _p, _u64p)
table_reshard = _fn("pskv_table_reshard", c_int, _p, c_uint32)

checkpoint = _fn("pskv_checkpoint", c_int, _p)
checkpoint_with_meta = _fn("pskv_checkpoint_with_meta", c_int, _p, c_char_p, c_size_t)
checkpoint_start = _fn("pskv_checkpoint_start", c_int, _p, c_char_p, c_size_t,
                       POINTER(c_void_p))
checkpoint_wait = _fn("pskv_checkpoint_wait", c_int, _p, _u64p)
checkpoint_done = _fn("pskv_checkpoint_done", c_int, _p)
checkpoint_meta = _fn("pskv_checkpoint_meta", c_int, _p, _p, c_size_t, _szp, _u64p)
backup = _fn("pskv_backup", c_int, _p, c_char_p)
compact = _fn("pskv_compact", c_int, c_char_p, _u64p, _u64p)

iter_create = _fn("pskv_iter_create", c_int, _p, POINTER(c_void_p))
iter_next = _fn("pskv_iter_next", c_int, _p, _u64p, _p, _p)
iter_destroy = _fn("pskv_iter_destroy", None, _p)

feature_id = _fn("pskv_feature_id", c_uint64, c_char_p, c_char_p, c_size_t)
feature_ids = _fn("pskv_feature_ids", c_int, c_char_p, _p, _p, c_size_t, _p)

ring_create = _fn("pskv_ring_create", c_int, c_uint, c_uint64, POINTER(c_void_p))
ring_add = _fn("pskv_ring_add", c_int, _p, c_uint32, c_double)
ring_remove = _fn("pskv_ring_remove", c_int, _p, c_uint32)
ring_route = _fn("pskv_ring_route", c_int, _p, _p, c_size_t, _p)
ring_nodes = _fn("pskv_ring_nodes", c_uint32, _p)
ring_destroy = _fn("pskv_ring_destroy", None, _p)

export_open = _fn("pskv_export_open", c_int, _p, c_uint64, c_char_p, POINTER(c_void_p))
export_ring = _fn("pskv_export_ring", c_int, _p, _p, c_uint32)
export_next = _fn("pskv_export_next", c_int, _p, _p, c_size_t, _szp)
export_version = _fn("pskv_export_version", c_uint64, _p)
export_close = _fn("pskv_export_close", None, _p)
apply = _fn("pskv_apply", c_int, _p, _p, c_size_t, c_int)
apply_since = _fn("pskv_apply_since", c_int, _p, _p, c_size_t, c_int, c_uint64)
chunk_encode = _fn("pskv_chunk_encode", c_int, c_uint32, _p, c_size_t, _p, c_char_p, _p,
                   c_size_t, _szp)
grad_encode = _fn("pskv_grad_encode", c_int, _p, _p, c_size_t, _p, c_char_p, _p, c_size_t,
                  _szp)
chunk_info_get = _fn("pskv_chunk_info_get", c_int, _p, c_size_t, POINTER(ChunkInfo))
chunk_decode = _fn("pskv_chunk_decode", c_int, _p, c_size_t, _p, c_size_t, _p, c_size_t, _p,
                   c_size_t, _p, c_size_t)


def _version_tuple(v: int):
    return (v // 10000, v // 100 % 100, v % 100)


library_version = _version_tuple(version())
if library_version < MIN_VERSION:
    raise ImportError(f"pskv: {library_path} is libpskv {version_string().decode()}; this "
                      f"binding needs {'.'.join(map(str, MIN_VERSION))} or later")
