"""Chunks, exports, gradient messages, the ring and feature ids.

Chunks are returned as numpy uint8 arrays (wrap one with
torch.from_numpy to send it over torch.distributed without a copy) and
accepted as any bytes-like object, uint8 array or CPU tensor.
"""
from __future__ import annotations

import ctypes
from collections import namedtuple
from typing import Optional

import numpy as np

from . import _arrays, _native as N
from ._handle import Owned
from .errors import InvalidArgument, OutOfRange, check, error

_EINVAL = InvalidArgument.code
_ERANGE = OutOfRange.code

CODECS = ("fp32", "fp16", "bf16", "int8")
_MODES = {"replace": 0, "push": 1, "add": 2}
_ANY_TABLE = 0x100

ChunkInfo = namedtuple("ChunkInfo", "kind codec dim state_floats optimizer rows tombstones "
                                    "since version lz4 bytes")
ChunkInfo.__doc__ = ("What a chunk holds (pskv_chunk_info): kind 'rows' (an export) or "
                     "'values' (chunk_encode, grad_encode), codec name, dim, state_floats, "
                     "optimizer (or -1), rows, tombstones, since, version, lz4, bytes.")
Chunk = namedtuple("Chunk", "keys values state tombstones")
Chunk.__doc__ = ("A decoded chunk: keys (uint64, ascending), values (rows x dim float32), "
                 "state (rows x state_floats float32, or None), tombstones (uint64).")


def apply_mode(mode: str, any_table: bool) -> int:
    m = _MODES.get(mode)
    if m is None:
        raise InvalidArgument(_EINVAL, f"mode {mode!r}: expected one of {', '.join(_MODES)}")
    return m | (_ANY_TABLE if any_table else 0)


def _encode(call, cap: int) -> np.ndarray:
    """Run an encoder into a buffer of cap bytes, again with the size it
    asks for when that is too small."""
    n = ctypes.c_size_t()
    while True:
        buf = np.empty(max(cap, 1), dtype=np.uint8)
        rc = call(buf.ctypes.data, buf.size, ctypes.byref(n))
        if rc != _ERANGE or n.value <= cap:
            break
        cap = n.value
    check(rc)
    return buf[:n.value]


def _flag(on: bool) -> str:
    return "on" if on else "off"


def _dim_of(x, n: int, what: str) -> int:
    """The row length of x, an (n, dim) array, tensor or list of rows."""
    shape = getattr(x, "shape", None)
    if shape is None and isinstance(x, (list, tuple)):
        shape = np.shape(x)
    if shape is None or len(shape) != 2 or shape[0] != n:
        raise InvalidArgument(_EINVAL, f"{what} must have shape ({n}, dim), not "
                                       f"{tuple(shape) if shape is not None else type(x).__name__}"
                                       " (or give dim=)")
    return int(shape[1])


def chunk_encode(keys, values, codec: str = "fp32", lz4: bool = False) -> np.ndarray:
    """One values chunk of the caller's rows (pskv_chunk_encode): keys may
    repeat; values (n, dim) float32, finite. Apply it to a table with
    mode "push" (gradients), "add" or "replace"."""
    k = _arrays.keys(keys)
    dim = _dim_of(values, k.size, "values")
    v = _arrays.rows(values, k.size, dim, "values")
    cfg = f"codec={codec} lz4={_flag(lz4)}".encode()
    return _encode(lambda b, c, n: N.chunk_encode(dim, k.ctypes.data, k.size, v.ctypes.data,
                                                  cfg, b, c, n),
                   k.size * (dim * 4 + 16) + 4096)


def grad_encode(keys, grads, codec: str = "fp32", topk: float = 1.0, lz4: bool = False,
                residual=None, dim: Optional[int] = None) -> np.ndarray:
    """A gradient message (pskv_grad_encode): repeated keys summed, each
    row started from its residual row (error feedback, when `residual`, a
    Table, is given), the rows of largest L2 norm kept (topk: a fraction,
    1.0 keeps all), encoded with `codec`; the residual gets what the
    receiver will not see. Apply the message with mode "push". One
    residual table per sender: calls on one residual must not overlap."""
    k = _arrays.keys(keys)
    if residual is not None:
        rh = residual._handle()
        d = residual.dim
    else:
        rh = None
        d = _dim_of(grads, k.size, "grads") if dim is None else \
            _arrays.integer(dim, 32, "dim")
    g = _arrays.rows(grads, k.size, d, "grads")
    cfg = f"codec={codec} topk={float(topk)!r} lz4={_flag(lz4)} dim={d}".encode()
    return _encode(lambda b, c, n: N.grad_encode(rh, k.ctypes.data, k.size, g.ctypes.data, cfg,
                                                 b, c, n),
                   k.size * (d * 4 + 16) + 4096)


def chunk_info(chunk) -> ChunkInfo:
    """Check a chunk (checksum, header, lengths) and describe it."""
    c = _arrays.buffer(chunk)
    i = N.ChunkInfo()
    check(N.chunk_info_get(c.ctypes.data, c.size, ctypes.byref(i)))
    kind = {1: "rows", 2: "values"}.get(i.kind, i.kind)
    codec = CODECS[i.codec] if i.codec < len(CODECS) else i.codec
    return ChunkInfo(kind, codec, i.dim, i.state_floats, i.optimizer, i.rows, i.tombstones,
                     i.since, i.version, bool(i.lz4), i.bytes)


def chunk_decode(chunk, state: bool = True) -> Chunk:
    """Decode a chunk into numpy arrays (pskv_chunk_decode)."""
    c = _arrays.buffer(chunk)
    i = N.ChunkInfo()
    check(N.chunk_info_get(c.ctypes.data, c.size, ctypes.byref(i)))
    keys = np.empty(i.rows, dtype=np.uint64)
    values = np.empty((i.rows, i.dim), dtype=np.float32)
    want_state = state and i.state_floats > 0
    st = np.empty((i.rows, i.state_floats), dtype=np.float32) if want_state else None
    tombs = np.empty(i.tombstones, dtype=np.uint64)

    def p(a):
        return a.ctypes.data if a is not None and a.size else None

    check(N.chunk_decode(c.ctypes.data, c.size, p(keys), keys.size, p(values), values.size,
                         p(st), st.size if st is not None else 0, p(tombs), tombs.size))
    return Chunk(keys, values, st, tombs)


class Export(Owned):
    """A delta export of a table (Table.export): iterate it for chunks
    (uint8 arrays, each its own buffer). `version` is the cursor for this
    consumer's next export. Close it (or use `with`) before its store;
    after the store closes its calls raise pskv.InvalidArgument."""

    #: Room for one chunk: exports cut chunks at chunk_bytes (default 1
    #: MiB) or at this, whichever is smaller. numpy leaves untouched pages
    #: of a large buffer unallocated.
    buffer_bytes = 8 << 20
    _free = N.export_close

    def __init__(self, table, since: int, config: str, ring, node):
        h = ctypes.c_void_p()
        check(N.export_open(table._handle(), _arrays.integer(since, 64, "since"),
                            (config or "").encode(), ctypes.byref(h)))
        self._h = h.value
        self._table = table  # keeps the table's store alive while the export is
        if ring is not None:
            if node is None:
                self.close()
                raise InvalidArgument(_EINVAL, "an export with a ring needs node=")
            rc = N.export_ring(self._h, ring._handle(), _arrays.integer(node, 32, "node"))
            if rc < 0:
                err = error(rc)
                self.close()
                raise err

    @property
    def version(self) -> int:
        return N.export_version(self._h) if self._h is not None else 0

    def next(self) -> Optional[np.ndarray]:
        """The next chunk, or None when the export is complete."""
        if self._h is None:
            raise InvalidArgument(_EINVAL, "the export is closed")
        n = ctypes.c_size_t()
        cap = self.buffer_bytes
        while True:
            buf = np.empty(cap, dtype=np.uint8)
            rc = N.export_next(self._h, buf.ctypes.data, buf.size, ctypes.byref(n))
            if rc == _ERANGE and n.value > cap:
                cap = n.value
                continue
            break
        check(rc)
        return buf[:n.value] if rc == 1 else None

    def __iter__(self):
        while True:
            c = self.next()
            if c is None:
                return
            yield c



class Ring(Owned):
    """A consistent-hash ring (pskv_ring_*): rings created with the same
    (vnodes, seed) and nodes route identically in every process. add and
    remove must not run concurrently with other calls on the ring."""

    _free = N.ring_destroy

    def __init__(self, vnodes: int = 0, seed: int = 0, nodes=None):
        h = ctypes.c_void_p()
        self._vnodes = _arrays.integer(vnodes, 32, "vnodes")
        self._seed = _arrays.integer(seed, 64, "seed")
        check(N.ring_create(self._vnodes, self._seed, ctypes.byref(h)))
        self._h = h.value
        self._nodes = {}  # node -> weight, to rebuild the ring in a copy
        for node in nodes or ():
            self.add(node)

    def __deepcopy__(self, memo):
        """A new ring with the same vnodes, seed and nodes: it routes alike."""
        r = Ring(self._vnodes, self._seed)
        for node, weight in self._nodes.items():
            r.add(node, weight)
        return r

    __copy__ = __deepcopy__

    def _handle(self):
        if self._h is None:
            raise InvalidArgument(_EINVAL, "the ring is closed")
        return self._h

    def add(self, node: int, weight: float = 1.0) -> None:
        node = _arrays.integer(node, 32, "node")
        check(N.ring_add(self._handle(), node, float(weight)))
        self._nodes[node] = float(weight)

    def remove(self, node: int) -> None:
        node = _arrays.integer(node, 32, "node")
        check(N.ring_remove(self._handle(), node))
        self._nodes.pop(node, None)

    def route(self, keys) -> np.ndarray:
        """The owning node of each key, as uint32."""
        h = self._handle()
        k = _arrays.keys(keys)
        out = np.empty(k.size, dtype=np.uint32)
        check(N.ring_route(h, k.ctypes.data, k.size, out.ctypes.data))
        return out

    def __len__(self) -> int:
        return N.ring_nodes(self._handle())



def _bytes(x) -> bytes:
    """str as UTF-8, bytes-like objects as they are; nothing else (bytes(5)
    would be five NUL bytes)."""
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, (int, float)) or x is None:
        raise InvalidArgument(_EINVAL, f"feature data must be str or bytes-like, not "
                                       f"{type(x).__name__} (encode numbers first, e.g. "
                                       f"struct.pack('<I', v))")
    try:
        return bytes(memoryview(x).cast("B"))
    except TypeError:
        raise InvalidArgument(_EINVAL, f"feature data must be str or bytes-like, not "
                                       f"{type(x).__name__}") from None


def feature_id(data, ns: str = "") -> int:
    """The feature id of (namespace, bytes): XXH3-64, the same on every
    platform (pskv_feature_id). str is encoded as UTF-8."""
    b = _bytes(data)
    return N.feature_id(_bytes(ns) if ns else None, b, len(b))


def feature_ids(items, ns: str = "") -> np.ndarray:
    """feature_id of every item (bytes or str) in one C call, as uint64."""
    parts = [_bytes(x) for x in items]
    offsets = np.zeros(len(parts) + 1, dtype=np.uint64)
    if parts:
        np.cumsum([len(p) for p in parts], out=offsets[1:])
    data = b"".join(parts)
    ids = np.empty(len(parts), dtype=np.uint64)
    buf = ctypes.create_string_buffer(data, len(data)) if data else None
    check(N.feature_ids(_bytes(ns) if ns else None, ctypes.addressof(buf) if buf else None,
                        offsets.ctypes.data, len(parts), ids.ctypes.data))
    return ids
