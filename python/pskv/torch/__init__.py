"""Store-backed embeddings for PyTorch: pskv.torch.Embedding and
pskv.torch.EmbeddingBag.

The rows live in a pskv table, not in the module. Forward takes the
distinct ids of the batch, pulls them in one C call and gathers or pools
them in torch (torch's own embedding / embedding_bag kernels over the
pulled rows). Backward pushes the gradient of every position with its id
in one C call; the C library sums the gradients of each distinct id (in
order of appearance) and its optimizer updates the rows once: the fused
pattern of FBGEMM's table-batched embeddings and TorchRec's fused
optimizers. (Summing in C rather than through torch's dense
embedding_bag backward saves about half a millisecond per 4096 ids on one
CPU thread.) The rows are not autograd parameters, so dense parameters
take a normal torch optimizer and the embeddings take none.

Consequences worth knowing:
- every backward applies its update at once: gradient accumulation over
  several backwards before an optimizer step applies several updates (use
  an update=sync table and Table.step() to apply one per step);
- ``state_dict()`` holds no rows: checkpoint the store
  (``Store.checkpoint(meta=...)``, with the dense state_dict in meta);
- ids are raw int64 (or uint64) values used as keys as they are: any
  64-bit id works, no vocabulary size;
- the output is float32 on the CPU.

Works with any torch that has torch.nn.functional.embedding_bag with
padding_idx (1.9 and later; tested on Debian's 1.13).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .._arrays import keys as _keys
from .._store import Table

__all__ = ["Embedding", "EmbeddingBag"]


class _Positions(torch.autograd.Function):
    """The output of a gather or a sum/mean pooling over rows pulled from a
    table; backward pushes each position's gradient with its key.

    forward(anchor, psw, out, table, pos_keys, pos_bag, pos_scale, psw_grad):
    out is the forward's result (computed without autograd); pos_keys the
    key of every position that counts (padding left out), pos_bag its
    output row (None: position i is output row i), pos_scale its factor (a
    per-sample weight, 1/bag size for mean) or None; psw_grad: (bag, rows)
    of every position, for the gradient of per-sample weights that want
    one (d out[bag] / d psw[i] = the row at position i), or None."""

    @staticmethod
    def forward(ctx, anchor, psw, out, table, pos_keys, pos_bag, pos_scale, psw_grad):
        ctx.table = table
        ctx.pos_keys = pos_keys
        ctx.pos_bag = pos_bag
        ctx.pos_scale = pos_scale
        ctx.psw_grad = psw_grad
        ctx.psw_shape = None if psw is None else psw.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        out_grad = grad.detach().float().reshape(-1, grad.shape[-1])
        g = out_grad if ctx.pos_bag is None else out_grad.index_select(0, ctx.pos_bag)
        grad_psw = None
        if ctx.psw_grad is not None:
            bag, rows = ctx.psw_grad
            grad_psw = (out_grad.index_select(0, bag) * rows).sum(1).reshape(ctx.psw_shape)
        if ctx.pos_scale is not None:
            g = g * ctx.pos_scale.unsqueeze(1)
        if len(ctx.pos_keys):
            ctx.table.push(ctx.pos_keys, g.contiguous().numpy())
        return None, grad_psw, None, None, None, None, None, None


class _Rows(torch.autograd.Function):
    """The rows of distinct keys pulled from a table; their gradient is
    pushed into it. `anchor` (a tensor that requires grad) makes autograd
    call backward."""

    @staticmethod
    def forward(ctx, anchor, table: Table, keys: np.ndarray):
        ctx.table = table
        ctx.keys = keys
        return torch.from_numpy(table.pull(keys))

    @staticmethod
    def backward(ctx, grad):
        g = grad.detach()
        if g.dtype != torch.float32:
            g = g.float()
        keys, g = _with_gradient(ctx.keys, g.contiguous().numpy())
        if len(keys):
            ctx.table.push(keys, g)
        return None, None, None


def _with_gradient(keys: np.ndarray, g: np.ndarray):
    """The keys and gradient rows that are not all zero. Rows without
    gradient (max mode: a row no feature's maximum came from) are left
    alone: a zero gradient still moves rows under Adam or FTRL and stamps
    a version."""
    kept = np.flatnonzero(np.any(g != 0, axis=1))
    return keys[kept], g[kept]


def _unique(flat: torch.Tensor):
    """(distinct values ascending, each position's index into them): what
    torch.unique(return_inverse=True) gives, in about a third of its time
    on one CPU thread (numpy's sort, then runs marked and numbered)."""
    a = flat.numpy()
    perm = np.argsort(a)
    ordered = a[perm]
    first = np.empty(a.size, dtype=np.bool_)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    index = np.empty(a.size, dtype=np.int64)
    index[perm] = np.cumsum(first) - 1
    return torch.from_numpy(ordered[first]), torch.from_numpy(index)


def _distinct(ids: torch.Tensor, padding_idx: Optional[int]):
    """(keys, index, pad): the distinct ids as uint64 keys, each position's
    index into them, and the index standing for padding (or None)."""
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"pskv.torch: ids must be an integer tensor, not {ids.dtype}")
    flat = ids.reshape(-1).long()
    if padding_idx is None:
        uniq, index = _unique(flat)
        return _keys(uniq.numpy()), index.reshape(ids.shape), None
    pad = flat == padding_idx
    uniq, index = _unique(flat[~pad])
    full = torch.full_like(flat, uniq.numel())
    full[~pad] = index
    return _keys(uniq.numpy()), full.reshape(ids.shape), uniq.numel()


class _StoreEmbedding(torch.nn.Module):
    def __init__(self, table: Table, padding_idx: Optional[int] = None):
        super().__init__()
        if not isinstance(table, Table):
            raise TypeError("pskv.torch: pass a pskv.Table (Store.table(name, config))")
        self.table = table
        self.embedding_dim = table.dim
        self.padding_idx = padding_idx
        # Not a parameter or buffer: it only makes autograd reach backward.
        self._anchor = torch.empty(0, requires_grad=True)

    def _training(self) -> bool:
        return torch.is_grad_enabled() and self.training

    def _rows(self, keys: np.ndarray, pad: Optional[int], through_autograd: bool = False):
        """The pulled rows of keys (plus one zero row standing for padding,
        never pushed). through_autograd: their gradient is pushed (the max
        mode's path); otherwise _Positions pushes."""
        if through_autograd:
            rows = _Rows.apply(self._anchor, self.table, keys)
        else:
            rows = torch.from_numpy(self.table.pull(keys))
        if pad is not None:
            rows = torch.cat([rows, rows.new_zeros(1, self.embedding_dim)])
        return rows

    def prefetch(self, input: torch.Tensor) -> None:
        """Start loading the spilled rows of a later batch's ids into DRAM
        and return at once (Table.prefetch): call it with the next batch
        before this batch's forward."""
        self.table.prefetch(_distinct(input, self.padding_idx)[0])

    def extra_repr(self) -> str:
        s = f"table={self.table.name!r}, embedding_dim={self.embedding_dim}"
        return s + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")


class Embedding(_StoreEmbedding):
    """Like torch.nn.Embedding over the rows of a pskv table:
    forward(input) gives input.shape + (dim,). Ids equal to padding_idx
    give zeros and no gradient. Training (module.train() and grad
    enabled) pushes each backward's gradients into the table; in eval
    mode or under torch.no_grad() forward only reads (pull: rows of new
    ids are still created from the table's initializer)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        keys, index, pad = _distinct(input, self.padding_idx)
        rows = self._rows(keys, pad)
        out = F.embedding(index, rows)
        if not self._training():
            return out
        flat = index.reshape(-1)
        counted = None if pad is None else torch.nonzero(flat != pad).squeeze(1)
        pos_keys = keys[(flat if counted is None else flat[counted]).numpy()]
        return _Positions.apply(self._anchor, None, out, self.table, pos_keys, counted, None,
                                None)


class EmbeddingBag(_StoreEmbedding):
    """Like torch.nn.EmbeddingBag over the rows of a pskv table:
    forward(input, offsets=None, per_sample_weights=None), mode "sum",
    "mean" or "max", include_last_offset and padding_idx as there (a
    padding id does not count in its bag). Gradients reach the table as
    in Embedding."""

    def __init__(self, table: Table, mode: str = "sum", include_last_offset: bool = False,
                 padding_idx: Optional[int] = None):
        super().__init__(table, padding_idx)
        if mode not in ("sum", "mean", "max"):
            raise ValueError(f"mode {mode!r}: expected 'sum', 'mean' or 'max'")
        self.mode = mode
        self.include_last_offset = include_last_offset

    def forward(self, input: torch.Tensor, offsets: Optional[torch.Tensor] = None,
                per_sample_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        if input.dim() == 2 and self.include_last_offset:
            raise ValueError("pskv.torch.EmbeddingBag: include_last_offset applies to 1-D "
                             "input with offsets, not to 2-D input (torch 1.13 corrupts its "
                             "heap on that combination)")
        keys, index, pad = _distinct(input, self.padding_idx)
        training = self._training()
        psw = per_sample_weights
        if self.mode == "max":  # each feature's gradient goes to its own row: autograd's
            rows = self._rows(keys, pad, through_autograd=training)
            return F.embedding_bag(index, rows, offsets, mode="max", per_sample_weights=psw,
                                   include_last_offset=self.include_last_offset,
                                   padding_idx=pad)
        rows = self._rows(keys, pad)
        if not training:  # reads only; weights that want a gradient still get it
            if psw is not None and psw.requires_grad and torch.is_grad_enabled():
                rows.requires_grad_()  # (torch 1.13 asserts on weights-only gradients;
                #                         the rows' own gradient is dropped: no push)
            return F.embedding_bag(index, rows, offsets, mode=self.mode,
                                   per_sample_weights=psw,
                                   include_last_offset=self.include_last_offset,
                                   padding_idx=pad)
        with torch.no_grad():
            out = F.embedding_bag(index, rows, offsets, mode=self.mode,
                                  per_sample_weights=psw,
                                  include_last_offset=self.include_last_offset, padding_idx=pad)
        flat = index.reshape(-1)
        n = flat.numel()
        if input.dim() == 2 and input.shape[1] == 1:
            bag = None  # position i is bag i
        elif input.dim() == 2:
            bag = torch.arange(n) // max(input.shape[1], 1)
        else:
            starts = offsets[:-1] if self.include_last_offset else offsets
            bag = torch.searchsorted(starts.long(), torch.arange(n), right=True) - 1
        counts = None if pad is None else flat != pad
        if input.dim() == 1 and self.include_last_offset and offsets.numel():
            within = torch.arange(n) < offsets[-1]  # positions past the last offset: no bag
            counts = within if counts is None else counts & within
        counted = None if counts is None else torch.nonzero(counts).squeeze(1)
        if bag is None and (counted is not None or per_sample_weights is not None):
            bag = torch.arange(n)
        bag_all = bag
        if counted is not None:
            flat, bag = flat[counted], bag[counted]
        scale = None
        if psw is not None:
            scale = psw.detach().reshape(-1).float()
            scale = scale if counted is None else scale[counted]
        if self.mode == "mean" and bag is not None:  # (bags of one need no scaling)
            size = torch.bincount(bag, minlength=out.shape[0]).clamp_(min=1)
            inv = 1.0 / size.float().index_select(0, bag)
            scale = inv if scale is None else scale * inv
        psw_grad = None
        if psw is not None and psw.requires_grad:  # padding positions meet the zero row
            psw_grad = (bag_all, rows.index_select(0, index.reshape(-1)))
        return _Positions.apply(self._anchor, psw, out, self.table, keys[flat.numpy()], bag,
                                scale, psw_grad)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode!r}"
