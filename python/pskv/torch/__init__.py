"""Store-backed embeddings for PyTorch: pskv.torch.Embedding and
pskv.torch.EmbeddingBag.

The rows live in a pskv table, not in the module. Forward takes the
distinct ids of the batch, pulls them in one C call and gathers or pools
them in torch (torch's own embedding / embedding_bag kernels over the
pulled rows). Backward sums the gradient per distinct id (autograd does,
through those kernels) and pushes it into the table in one C call, where
the table's optimizer updates the rows: the fused pattern of FBGEMM's
table-batched embeddings and TorchRec's fused optimizers. The rows are
not autograd parameters, so dense parameters take a normal torch
optimizer and the embeddings take none.

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
        ctx.table.push(ctx.keys, g.contiguous().numpy())
        return None, None, None


def _distinct(ids: torch.Tensor, padding_idx: Optional[int]):
    """(keys, index, pad): the distinct ids as uint64 keys, each position's
    index into them, and the index standing for padding (or None)."""
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"pskv.torch: ids must be an integer tensor, not {ids.dtype}")
    flat = ids.reshape(-1)
    if padding_idx is None:
        uniq, index = torch.unique(flat, return_inverse=True)
        return _keys(uniq.numpy()), index.reshape(ids.shape), None
    pad = flat == padding_idx
    uniq, index = torch.unique(flat[~pad], return_inverse=True)
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

    def _rows(self, keys: np.ndarray, pad: Optional[int]) -> torch.Tensor:
        if torch.is_grad_enabled() and self.training:
            rows = _Rows.apply(self._anchor, self.table, keys)
        else:
            rows = torch.from_numpy(self.table.pull(keys))
        if pad is not None:  # one zero row standing for padding, never pushed
            rows = torch.cat([rows, rows.new_zeros(1, self.embedding_dim)])
        return rows

    def prefetch(self, input: torch.Tensor) -> None:
        """Start loading the spilled rows of a later batch's ids into DRAM
        and return at once (Table.prefetch): call it with the next batch
        before this batch's forward."""
        flat = input.reshape(-1)
        if self.padding_idx is not None:
            flat = flat[flat != self.padding_idx]
        self.table.prefetch(torch.unique(flat).numpy())

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
        return F.embedding(index, self._rows(keys, pad), padding_idx=pad)


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
        keys, index, pad = _distinct(input, self.padding_idx)
        return F.embedding_bag(index, self._rows(keys, pad), offsets, mode=self.mode,
                               per_sample_weights=per_sample_weights,
                               include_last_offset=self.include_last_offset, padding_idx=pad)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode!r}"
