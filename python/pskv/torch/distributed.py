"""Sharded embeddings and consistent checkpoints over torch.distributed.

ShardedEmbeddingBag splits one logical table over the ranks of a process
group (gloo on CPU): a ring shared by every rank (same vnodes, seed and
nodes) gives each id one owning rank, whose own local store holds its row.
Every rank builds the module with the same name and config.

Forward, for a batch of ids:
  1. the distinct ids, routed to their owners;
  2. the ids to their owners in one all_to_all_single of equal slots, each
     headed by its length and the sender's longest (see _Slots: all ranks
     agree on a second exchange when a piece outgrew the slots, and on how
     to split big exchanges);
  3. the owners' rows back (all_to_all_single;
     gloo in torch 1.13 has neither the list all_to_all nor reduce_scatter,
     so owners return rows and the requester pools them with torch's
     embedding_bag);
Backward: the gradient of each distinct id, summed by autograd, goes to its
owner. With codec fp32 and topk 1 the rows go as they are, in the order the
owner served them in forward (one exchange, nothing to size). Otherwise as
one gradient message per owner (pskv.grad_encode: codec and topk, with
error feedback through a residual table in the local store), in slots as
the ids went. Each owner applies what it receives one sender at a
time, in rank order (a push, or an apply with mode "push").

Every exchange whose largest piece exceeds max_message_bytes is sent in
rounds (gloo's alltoallv has an open bug with large messages).

prefetch(next input), called between forward and backward, lets backward
carry the next batch's ids in the gradient exchange: each owner applies
the gradients it receives, then reads the rows of the ids that came with
them and sends them back, and the next forward uses those rows. Three
collectives per step instead of four with DDP, and the rows are the ones
a forward would read (every gradient of the step is applied first).

Every rank must run forward and backward in lockstep (they are
collectives), as with DistributedDataParallel.

checkpoint() and open_consistent() implement the protocol of docs/API.md
("Consistent checkpoints across instances") for Python trainers.
"""
from __future__ import annotations

import math
import struct
import weakref
from typing import Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

import pskv
from . import _distinct, _with_gradient

__all__ = ["ShardedEmbeddingBag", "checkpoint", "checkpoint_start", "open_consistent"]


class _Slots:
    """Pieces of bytes of any length to every rank in one all_to_all_single
    of equal slots: each slot starts with its piece's length, the sender's
    longest piece, the sender's failure flag and its ahead flag (its piece
    carries the next batch's ids too), then up to `cap` bytes of the
    piece. Every rank receives every sender's header, so all agree
    whether a second exchange must carry the bytes beyond the slots, on the
    next cap (a function of the longest piece any rank sent: the same
    everywhere), and on which ranks failed. One collective where
    sizes-then-bytes took two (each costs 0.5-2 ms on the 2-core test
    machine)."""

    HEAD = 32

    def __init__(self, cap: int, limit: int):
        # Multiples of 8: every slot, and every piece in it, starts 8-byte
        # aligned, so rows and ids received are viewed in place.
        self.limit = max(64, limit - self.HEAD) & ~7
        self.cap = min(cap, self.limit) & ~7

    def exchange(self, pieces, group, failed: bool = False, ahead: bool = False):
        """(the piece each rank sent this one, the longest piece any rank
        sent any rank, the ranks that said they failed, the ranks that said
        ahead)."""
        return self.finish(self.start(pieces, group, failed, ahead), group)

    def start(self, pieces, group, failed: bool = False, ahead: bool = False):
        """Send the slots and return at once: finish() waits for them. No
        other exchange of these slots may come between the two."""
        world = len(pieces)
        cap, head = self.cap, self.HEAD
        lens = np.array([p.size for p in pieces], dtype=np.int64)
        buf = np.zeros((world, head + cap), dtype=np.uint8)
        hdr = buf[:, :head].view(np.int64)
        hdr[:, 0] = lens
        hdr[:, 1] = lens.max() if world else 0
        hdr[:, 2] = int(failed)
        hdr[:, 3] = int(ahead)
        for d, piece in enumerate(pieces):
            n = min(piece.size, cap)
            buf[d, head:head + n] = piece[:n]
        out = torch.empty(buf.size, dtype=torch.uint8)
        send = torch.from_numpy(buf.reshape(-1))
        work = dist.all_to_all_single(out, send, group=group, async_op=True)
        return work, out, send, pieces, lens

    def finish(self, started, group):
        work, out, _, pieces, lens = started
        work.wait()
        world = len(pieces)
        cap, head = self.cap, self.HEAD
        got = out.numpy().reshape(world, head + cap)
        rh = got[:, :head].copy().view(np.int64)
        recv, longest = rh[:, 0], int(rh[:, 1].max()) if world else 0
        parts = [got[src, head:head + min(int(recv[src]), cap)] for src in range(world)]
        if longest > cap:  # every rank knows it: the rest in rounds of its own
            rest = [piece[cap:] for piece in pieces]
            more = _alltoallv(torch.from_numpy(np.concatenate(rest)),
                              np.maximum(lens - cap, 0), np.maximum(recv - cap, 0),
                              longest - cap, self.limit, group).numpy()
            at = 0
            for src in range(world):
                n = max(int(recv[src]) - cap, 0)
                parts[src] = np.concatenate([parts[src], more[at:at + n]])
                at += n
        self.cap = min(self.limit, (max(256, longest + longest // 4) + 7) & ~7)
        return (parts, longest, [r for r in range(world) if rh[r, 2]],
                [r for r in range(world) if rh[r, 3]])


def _failure(what: str, ranks, mine: Optional[BaseException]) -> BaseException:
    """The error every rank raises after an exchange in which `ranks`
    failed: this rank's own when it is one of them."""
    if mine is not None:
        return mine
    return RuntimeError(f"pskv: rank(s) {ranks} failed {what} (their own error says why); "
                        "this rank raises too, so that every rank leaves the step together")


def _alltoallv(send: torch.Tensor, send_counts, recv_counts, largest: int, max_elems: int,
               group) -> torch.Tensor:
    """all_to_all_single of variable pieces, in rounds of at most
    max_elems per piece when the largest piece (over every pair of ranks:
    the same on every rank) is bigger."""
    out = torch.empty(int(sum(recv_counts)), dtype=send.dtype)
    send_counts = [int(c) for c in send_counts]
    recv_counts = [int(c) for c in recv_counts]
    if largest <= max_elems:
        dist.all_to_all_single(out, send, recv_counts, send_counts, group=group)
        return out
    send_at = np.concatenate([[0], np.cumsum(send_counts)])
    recv_at = np.concatenate([[0], np.cumsum(recv_counts)])
    for r in range(math.ceil(largest / max_elems)):
        lo = r * max_elems
        s_sizes = [max(0, min(c - lo, max_elems)) for c in send_counts]
        r_sizes = [max(0, min(c - lo, max_elems)) for c in recv_counts]
        piece = torch.cat([send[send_at[d] + lo:send_at[d] + lo + s_sizes[d]]
                           for d in range(len(send_counts))])
        got = torch.empty(sum(r_sizes), dtype=send.dtype)
        dist.all_to_all_single(got, piece, r_sizes, s_sizes, group=group)
        at = 0
        for s, n in enumerate(r_sizes):
            out[recv_at[s] + lo:recv_at[s] + lo + n] = got[at:at + n]
            at += n
    return out


class _Lookup:
    """One forward's exchanges: the rows (in the order of keys) and what
    backward needs to send the gradients back (as requester and as owner)."""
    __slots__ = ("rows", "send_keys", "order", "send_counts", "got_keys", "recv_counts",
                 "__weakref__")


class _ShardedRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, anchor, mod: "ShardedEmbeddingBag", look: _Lookup):
        ctx.mod = mod
        ctx.look = look
        rows, look.rows = look.rows, None  # no cycle ctx -> look -> rows -> ctx
        return rows

    @staticmethod
    def backward(ctx, grad):
        ctx.mod._send_grads(ctx.look, grad.detach().float().contiguous())
        return None, None, None


class ShardedEmbeddingBag(torch.nn.Module):
    """An EmbeddingBag whose rows are spread over the ranks of a process
    group, each rank's share in its own store (see the module doc).

    store: this rank's pskv.Store; name, config: the table (every rank the
    same); mode, include_last_offset, padding_idx: as torch.nn.EmbeddingBag;
    codec ("fp32", "fp16", "bf16", "int8") and topk (fraction of each
    message's rows kept, by L2 norm) for the gradients sent to owners,
    with error feedback when either loses information; vnodes, seed: the
    ring's; max_message_bytes: the largest piece of one exchange round.

    Counters: grad_bytes (gradient bytes this rank sent) and
    grad_bytes_fp32 (what fp32 rows would have taken), lookups_sent.
    """

    def __init__(self, store: pskv.Store, name: str, config: str, mode: str = "sum",
                 group=None, codec: str = "fp32", topk: float = 1.0,
                 include_last_offset: bool = False, padding_idx: Optional[int] = None,
                 vnodes: int = 0, seed: int = 0, max_message_bytes: int = 16 << 20):
        super().__init__()
        if mode not in ("sum", "mean", "max"):
            raise ValueError(f"mode {mode!r}: expected 'sum', 'mean' or 'max'")
        if codec not in pskv.CODECS:
            raise ValueError(f"codec {codec!r}: expected one of {pskv.CODECS}")
        if not 0.0 < topk <= 1.0:
            raise ValueError(f"topk={topk}: expected a fraction in (0, 1]")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.table = store.table(name, config)
        self.embedding_dim = self.table.dim
        self.mode = mode
        self.include_last_offset = include_last_offset
        self.padding_idx = padding_idx
        self.codec = codec
        self.topk = float(topk)
        self.residual = None
        if codec != "fp32" or topk < 1.0:
            self.residual = store.table(name + ".residual",
                                        f"dim={self.embedding_dim} optimizer=none")
        self.ring = pskv.Ring(vnodes, seed, nodes=range(self.world))
        self.max_message_bytes = int(max_message_bytes)
        self._key_slots = _Slots(8 * 1024, self.max_message_bytes)
        self._row_slots = _Slots(64 * 1024, self.max_message_bytes)
        self._grad_slots = _Slots(64 * 1024, self.max_message_bytes)
        self._apply_error = None  # an owner's failed push, told at the next exchange
        self._sync = "update=sync" in self.table.info().schema.split()
        self._next = None   # the ids prefetch() was given: backward carries them
        # Lookups of graphs not yet backpropagated (freed with their graph):
        # the last backward of a step carries the next ids, so that the rows
        # come after every gradient of the step.
        self._open = weakref.WeakSet()
        self._ready = None  # (those ids, their route, the rows exchange backward started)
        self.grad_bytes = 0
        self.grad_bytes_fp32 = 0
        self.lookups_sent = 0
        self._anchor = torch.empty(0, requires_grad=True)

    def extra_repr(self) -> str:
        return (f"table={self.table.name!r}, embedding_dim={self.embedding_dim}, "
                f"mode={self.mode!r}, rank={self.rank}/{self.world}, codec={self.codec!r}, "
                f"topk={self.topk}")

    # -- forward: ids to owners, rows back

    def _route(self, keys: np.ndarray):
        """keys grouped by owner: (them in that order, the order, the count
        per owner, each owner's piece of ids as bytes)."""
        owners = self.ring.route(keys)
        order = np.argsort(owners, kind="stable")
        send_keys = keys[order]
        counts = np.bincount(owners, minlength=self.world).astype(np.int64)
        at = np.concatenate([[0], np.cumsum(counts)])
        return send_keys, order, counts, [send_keys[at[d]:at[d + 1]].view(np.uint8)
                                          for d in range(self.world)]

    def _rows_back(self, keys: np.ndarray, route, id_parts, late, what: str) -> _Lookup:
        """As owner, read the rows of the ids each rank sent (id_parts);
        send them back and assemble this rank's rows of keys (route:
        _route(keys)). late: this rank's earlier failure, told at this
        exchange instead of reading."""
        return self._rows_finish(keys, route, self._rows_start(id_parts, late), what)

    def _rows_start(self, id_parts, late):
        recv_counts = np.array([p.size // 8 for p in id_parts], dtype=np.int64)
        got_keys = np.concatenate(id_parts).view(np.uint64)
        dim = self.embedding_dim
        mine, rows = late, np.empty((0, dim), dtype=np.float32)
        if mine is None:
            try:
                rows = self.table.pull(got_keys)
            except pskv.Error as e:  # still take part in the exchange, then everyone raises
                mine = e
        row_at = np.concatenate([[0], np.cumsum(recv_counts)])
        started = self._row_slots.start(
            [rows[row_at[s]:row_at[s + 1]].reshape(-1).view(np.uint8) if mine is None
             else np.empty(0, np.uint8) for s in range(self.world)],
            self.group, failed=mine is not None)
        return started, mine, got_keys, recv_counts

    def _rows_finish(self, keys: np.ndarray, route, pending, what: str) -> _Lookup:
        started, mine, got_keys, recv_counts = pending
        send_keys, order, send_counts, _ = route
        back, _, failed, _ = self._row_slots.finish(started, self.group)
        if failed:
            raise _failure(what, failed, mine)
        look = _Lookup()
        look.rows = torch.empty(len(keys), self.embedding_dim)
        look.rows[torch.from_numpy(order)] = torch.from_numpy(
            np.concatenate(back).view(np.float32).reshape(-1, self.embedding_dim))
        self.lookups_sent += int(send_counts.sum() - send_counts[self.rank])
        look.send_keys, look.order, look.send_counts = send_keys, order, send_counts
        look.got_keys, look.recv_counts = got_keys, recv_counts  # what this rank served
        return look

    def _lookup(self, keys: np.ndarray) -> _Lookup:
        route = self._route(keys)
        # The previous step's failure to apply gradients (see _send_grads)
        # goes with the ids, so every rank learns of it at the same point.
        late, self._apply_error = self._apply_error, None
        parts, _, failed, _ = self._key_slots.exchange(route[3], self.group,
                                                       failed=late is not None)
        if failed:
            raise _failure("to apply the last step's gradients", failed, late)
        return self._rows_back(keys, route, parts, None, "to read the rows asked of them")

    def prefetch(self, input: torch.Tensor) -> None:
        """Name the batch the next forward will get, between this batch's
        forward and backward: backward then sends its ids with the
        gradients, each owner applies every gradient it receives and then
        reads and returns the rows asked, and the next forward uses them.
        One collective fewer per step (ids and gradients travel together),
        and the rows are what that forward would read itself: when the
        module ran several times this step, the last backward through it
        carries the ids.

        Every rank calls it in the same steps (otherwise, as when backward
        does not run, the next forward looks its rows up as usual). The
        next forward raises ValueError when its input has other ids: on
        that rank only, so the others wait in their next collective, as
        with any rank that leaves the lockstep: before evaluating after a
        step that prefetched, call drop_prefetch(). Not for update=sync
        tables (their rows change at step(), after backward)."""
        if self._sync:
            raise ValueError(f"table {self.table.name!r} has update=sync: its rows change at "
                             "step(), after the backward that would read them")
        if self._next is not None or self._ready is not None:
            raise RuntimeError("prefetch: the batch named last is not looked up yet (call "
                               "forward with its input first)")
        self._next = _distinct(input, self.padding_idx)[0]

    def drop_prefetch(self) -> None:
        """Forget the batch prefetch() named, and the rows a backward
        brought for it, before a forward of other ids (an evaluation after
        the last training step prefetched, a loop left early). Every rank
        calls it at the same point: finishing the rows exchange is a
        collective."""
        self._next = None
        if self._ready is not None:
            want, route, pending = self._ready
            self._ready = None
            self._rows_finish(want, route, pending,
                              "to apply gradients or read the rows asked of them")

    def _take_ahead(self, keys: np.ndarray) -> Optional[_Lookup]:
        """The rows backward brought for keys, or None (look them up)."""
        if self._ready is None:
            self._next = None  # no backward carried it (or named before its own forward)
            return None
        want, route, pending = self._ready
        self._ready = None
        # The rows exchange backward started ends here, on every rank alike
        # (its failures raise here too), whatever this rank's ids are.
        look = self._rows_finish(want, route, pending,
                                 "to apply gradients or read the rows asked of them")
        if not np.array_equal(want, keys):
            raise ValueError("forward got another input than the one prefetch() was given: "
                             "every rank must run the batch it prefetched")
        return look

    # -- backward: the gradients to their owners

    def _send_grads(self, look: _Lookup, grad: torch.Tensor) -> None:
        g = grad.numpy()[look.order]
        counts = look.send_counts
        at = np.concatenate([[0], np.cumsum(counts)])
        dim = self.embedding_dim
        mine = None
        pieces = [np.empty(0, np.uint8)] * self.world
        try:
            if not np.isfinite(g).all():
                raise pskv.InvalidArgument(pskv.InvalidArgument.code,
                                           "a gradient is not finite: nothing was sent")
            if self.residual is None:
                # fp32, every row: the owners know which keys come, in which
                # order (they served them in forward): the rows as they are.
                pieces = [g[at[d]:at[d + 1]].reshape(-1).view(np.uint8)
                          for d in range(self.world)]
            else:
                pieces = []
                for d in range(self.world):
                    k, gd = look.send_keys[at[d]:at[d + 1]], g[at[d]:at[d + 1]]
                    if self.mode == "max":  # rows no maximum came from: nothing to send
                        k, gd = _with_gradient(k, gd)
                    pieces.append(pskv.grad_encode(k, gd, codec=self.codec, topk=self.topk,
                                                   residual=self.residual, dim=dim)
                                  if len(k) else np.empty(0, np.uint8))
        except pskv.Error as e:
            # (A codec range error part-way leaves the residual of the owners
            # encoded before it as if their messages went: rare, and said.)
            mine, pieces = e, [np.empty(0, np.uint8)] * self.world
        self.grad_bytes += sum(p.size for d, p in enumerate(pieces) if d != self.rank)
        self.grad_bytes_fp32 += int((counts.sum() - counts[self.rank]) * dim * 4)
        self._open.discard(look)
        nxt = None
        if not self._open:  # this step's last backward through the module
            nxt, self._next = self._next, None
        route = None
        if nxt is not None:  # the next batch's ids ride along: [gradient bytes][ids]
            route = self._route(nxt)
            pieces = [np.concatenate([np.array([p.size], np.int64).view(np.uint8), p, ids])
                      for p, ids in zip(pieces, route[3])]
        parts, _, failed, ahead = self._grad_slots.exchange(
            pieces, self.group, failed=mine is not None, ahead=nxt is not None)
        id_parts = [np.empty(0, np.uint8)] * self.world
        for src in ahead:
            glen = int(parts[src][:8].view(np.int64)[0])
            parts[src], id_parts[src] = parts[src][8:8 + glen], parts[src][8 + glen:]
        # Every rank sent ids, so every rank answers with rows (all agree).
        merged = len(ahead) == self.world and not failed
        late = None
        pos = 0
        for src, part in enumerate(parts):  # one sender at a time, in rank order
            n = int(look.recv_counts[src])
            try:
                if self.residual is None and part.size:
                    k, gp = look.got_keys[pos:pos + n], part.view(np.float32).reshape(-1, dim)
                    if self.mode == "max":
                        k, gp = _with_gradient(k, gp)
                    if len(k):
                        self.table.push(k, gp)
                elif part.size:
                    self.table.apply(part, mode="push")
            except pskv.Error as e:
                # Told at the next exchange: raising here would leave the
                # other ranks waiting in it.
                late = late or e
            pos += n
        if failed:
            self._apply_error = self._apply_error or late
            raise _failure("to send their gradients", failed, mine)
        if not merged:
            self._apply_error = self._apply_error or late
            return
        # The rows go back while DDP and the optimizer finish the step; the
        # next forward waits for them.
        self._ready = (nxt, route, self._rows_start(id_parts, late))

    # -- the module

    def forward(self, input: torch.Tensor, offsets: Optional[torch.Tensor] = None,
                per_sample_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        if input.dim() == 2 and self.include_last_offset:
            raise ValueError("include_last_offset applies to 1-D input with offsets")
        keys, index, pad = _distinct(input, self.padding_idx)
        look = self._take_ahead(keys)
        if look is None:
            look = self._lookup(keys)
        if torch.is_grad_enabled() and self.training:
            self._open.add(look)
            rows = _ShardedRows.apply(self._anchor, self, look)
        else:
            rows = look.rows
        if pad is not None:
            rows = torch.cat([rows, rows.new_zeros(1, self.embedding_dim)])
        return F.embedding_bag(index, rows, offsets, mode=self.mode,
                               per_sample_weights=per_sample_weights,
                               include_last_offset=self.include_last_offset, padding_idx=pad)


# ---------------------------------------------------------------- checkpoints

_MAGIC = b"pskvstp1"
_HEAD = struct.Struct("<8sq")


class _RankCheckpoint:
    def __init__(self, store, step, ck, meta, group):
        self.store, self.step, self.ck, self.meta, self.group = store, step, ck, meta, group

    def wait(self) -> int:
        """Wait for this rank's commit, retry it once if it failed, then
        agree with every rank that all committed this step; returns the
        seq. Raises this rank's error, or RuntimeError naming the ranks
        that did not commit (every rank raises when one did not)."""
        seq, mine = None, None
        try:
            if self.ck is None:
                raise self.start_error
            seq = self.ck.wait()
        except pskv.Error:
            try:  # committed nothing new: try once more before the barrier
                seq = self.store.checkpoint(self.meta)
            except pskv.Error as e:
                mine = e
        ok = torch.tensor([self.step if seq is not None else -1], dtype=torch.int64)
        everyone = [torch.empty(1, dtype=torch.int64)
                    for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(everyone, ok, group=self.group)
        failed = [r for r, t in enumerate(everyone) if int(t) != self.step]
        if failed:
            if mine is not None:
                raise mine
            raise RuntimeError(f"pskv: ranks {failed} did not commit step {self.step}")
        return seq


def checkpoint_start(store: pskv.Store, step: int, extra=b"", group=None) -> _RankCheckpoint:
    """Start this rank's checkpoint of `step` (with `extra` bytes, e.g. the
    dense state_dict saved with torch.save, in the same transaction) and
    return at once; training may go on. Call .wait() on the result before
    starting the next checkpoint: it is the barrier of the protocol. A
    start that fails is retried in wait(), which every rank must call."""
    meta = _HEAD.pack(_MAGIC, pskv._arrays.integer(step, 63, "step")) + bytes(extra)
    try:
        ck = store.checkpoint_start(meta)
        err = None
    except pskv.Error as e:
        ck, err = None, e
    rc = _RankCheckpoint(store, int(step), ck, meta, group)
    rc.start_error = err
    return rc


def checkpoint(store: pskv.Store, step: int, extra=b"", group=None) -> int:
    """Every rank commits `step` (and extra) and waits until all have;
    returns this rank's seq. Call it at the same step on every rank."""
    return checkpoint_start(store, step, extra, group).wait()


def _read_step(store: pskv.Store):
    try:
        meta, seq = store.checkpoint_meta()
    except pskv.NotFound:
        return -1, 0, b""
    if len(meta) < _HEAD.size or meta[:8] != _MAGIC:
        raise pskv.Corrupt(pskv.Corrupt.code, "the last checkpoint's metadata was not written "
                                              "by pskv.torch.distributed.checkpoint")
    _, step = _HEAD.unpack_from(meta)
    return step, seq, meta[_HEAD.size:]


def _agree(value: int, op, group) -> int:
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=op, group=group)
    return int(t)


def open_consistent(path, config: str = "", group=None) -> Tuple[pskv.Store, Optional[int], bytes]:
    """Reopen every rank's store at the newest step all ranks hold: (store,
    step, extra). Collective: every rank calls it, and every rank returns
    or every rank raises.
      - every rank holds a step: the lowest, T; a rank ahead reopens one
        checkpoint back (at_seq), which holds T by the protocol;
      - no rank holds one: every store opens as it is, step None;
      - some do, some not (a rank died before the job's first checkpoint):
        the ranks that hold one go back to the checkpoint before it, which
        holds no step, and the step is None."""
    mine, step, seq = None, -2, 0
    try:
        s = pskv.open(path, config)
        try:
            step, seq, _ = _read_step(s)
        finally:
            s.close(discard=True)
    except pskv.Error as e:
        mine, step = e, -2
    lowest = _agree(step, dist.ReduceOp.MIN, group)
    highest = _agree(step, dist.ReduceOp.MAX, group)
    if lowest == -2:
        raise mine or RuntimeError("pskv: a rank could not read its store's last step")
    target = lowest if lowest >= 0 else None
    store, got, extra = None, None, b""
    try:
        if highest < 0 or (target is None and step < 0):
            store = pskv.open(path, config)
        else:
            at = seq if step == target else seq - 1
            store = pskv.open(path, f"{config} at_seq={at}")
            got, got_seq, extra = _read_step(store)
            want = (target, at) if target is not None else (-1, 0)
            if (got, got_seq) != want:
                raise pskv.Corrupt(pskv.Corrupt.code, f"reopened at seq {at}: step {got} (seq "
                                                      f"{got_seq}), expected step {want[0]}")
    except pskv.Error as e:
        mine = e
    if _agree(0 if mine is None else 1, dist.ReduceOp.MAX, group):
        if store is not None:
            store.close(discard=True)
        raise mine or RuntimeError("pskv: another rank could not reopen at the common step")
    return store, target, extra if target is not None else b""
