"""The fast engine's key/value cache, and the shims for `transformers`' cache arguments.

- `GrowingKVLayer`, a subclass of `transformers`' `DynamicLayer` that appends in place into
  reserved room and compacts rows in place; `new_cache`, a `DynamicCache` made of them (only
  where the model's cache is all full attention); `BufferPool`, which keeps their buffers from
  one batch to the next.
- `cache_keyword`, `cache_field`, `returned_cache`: the name under which a forward takes and
  returns the cache, which `transformers` 5.25 renamed (`past_key_values` → `cache`).

These depend on `transformers`' cache internals, so they live in the fast engine; the plain
engine (`sepo.agents.plain`) lets `generate` manage its own cache.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class BufferPool:
    """Key/value cache buffers of finished batches, kept for the next ones (a caching allocator
    for the cache, as CUDA's is for every tensor).

    On CPU every fresh buffer of more than 32 MB is a fresh `mmap` on glibc, and faulting its
    pages in costs more than filling it: the 8 buffers of a 256-row IPD batch are 41 MB each.
    An `LMAgent` keeps one pool across its engine steps; buffers come back when a batch is done
    (`BatchState.release`) or outgrown. Reused memory holds stale keys and values, finite
    numbers: a masked-out position must not be NaN (a never-written one could be), since
    NaN · 0 is NaN in attention's matrix product.
    """

    def __init__(self, limit_bytes: int = 1 << 30) -> None:
        self.limit_bytes = limit_bytes
        self._spare: list[torch.Tensor] = []  # 1-D tensors

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A tensor of `shape` with `like`'s dtype and device: the smallest spare one that
        fits, or a new one filled with zeros."""
        numel = math.prod(shape)
        fits = [k for k, t in enumerate(self._spare)
                if t.numel() >= numel and t.dtype == like.dtype and t.device == like.device]
        if not fits:
            return like.new_zeros(shape)
        best = min(fits, key=lambda k: self._spare[k].numel())
        return self._spare.pop(best)[:numel].view(shape)

    def give(self, tensor: torch.Tensor) -> None:
        """Keep `tensor`'s whole storage for a later `take` (the caller no longer uses it)."""
        storage = tensor.untyped_storage()
        flat = tensor.new_empty(0).set_(storage, 0, (storage.nbytes() // tensor.element_size(),))
        self._spare.append(flat)
        self._spare.sort(key=torch.Tensor.numel, reverse=True)
        while sum(t.numel() * t.element_size() for t in self._spare) > self.limit_bytes:
            self._spare.pop()  # the smallest goes first


class GrowingKVLayer(DynamicLayer):
    """A full-attention key/value cache layer that appends in place into room reserved at the
    end of its buffers, and drops rows in place. (`DynamicLayer` concatenates, copying the whole
    cache at every decoding step: for a batch of 64 rollouts that copy costs more than the
    step's matmuls.) `keys` and `values` are views of the buffers' first rows and tokens.

    Copies move only the valid tokens, never the reserve, and a compaction (rows dropped, order
    kept) moves only the rows whose place changes, inside the buffers it has. Both matter more
    than their bytes suggest: a fresh buffer of more than 32 MB is a fresh `mmap` on glibc, and
    faulting its pages in cost 6× the copy itself (256 rows of a 246-token IPD cache: 13 ms
    against 2 ms)."""

    def __init__(self, reserve: int, pool: BufferPool | None = None) -> None:
        super().__init__()
        self.reserve = reserve
        self.pool = pool
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def _new(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(shape) if self.pool is None else self.pool.take(shape, like)

    def release(self) -> None:
        """Give the buffers back to the pool; the layer is unusable after."""
        self._give_back(self._buffers)
        self._buffers = None

    def _owns(self, tensor: torch.Tensor) -> bool:
        """Whether `tensor` (the current keys) is still a view of this layer's buffers (the
        base class's `batch_repeat_interleave` replaces it with a fresh tensor)."""
        return (self._buffers is not None and tensor.dim() == 4
                and tensor.data_ptr() == self._buffers[0].data_ptr()
                and tensor.shape[0] <= self._buffers[0].shape[0])

    def _view(self, rows: int, length: int) -> None:
        keys, values = self._buffers
        self.keys, self.values = keys[:rows, :, :length], values[:rows, :, :length]

    def _allocate(self, rows: int, length: int,
                  like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """New buffers for `rows` rows and `length` + `reserve` tokens (finite filler).
        Returns the old ones, for `_give_back` once their contents are copied."""
        old = self._buffers if self._owns(self.keys) else None
        shape = (rows, like.shape[1], length + self.reserve, like.shape[3])
        self._buffers = (self._new(shape, like), self._new(shape, like))
        return old

    def _give_back(self, buffers: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        if self.pool is not None and buffers is not None:
            for buffer in buffers:
                self.pool.give(buffer)

    def empty_rows(self, rows: int, width: int, like: torch.Tensor) -> None:
        """Start as `rows` rows of `width` tokens of finite filler (masked out until
        `put_rows` fills them)."""
        self.lazy_initialization(like, like)
        shape = (rows, like.shape[1], width + self.reserve, like.shape[3])
        self._buffers = (self._new(shape, like), self._new(shape, like))
        self._view(rows, width)

    def put_rows(self, source: GrowingKVLayer, rows: torch.Tensor,
                 targets: torch.Tensor) -> None:
        """Copy `source`'s `rows` into this layer's rows `targets`, right-aligned."""
        start = self.keys.shape[-2] - source.keys.shape[-2]
        self.keys[targets, :, start:] = source.keys[rows]
        self.values[targets, :, start:] = source.values[rows]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.keys = key_states[:, :, :0]
            self.values = value_states[:, :, :0]
        rows, length, extra = key_states.shape[0], self.keys.shape[-2], key_states.shape[-2]
        if not self._owns(self.keys) or length + extra > self._buffers[0].shape[-2]:
            old_keys, old_values = self.keys, self.values
            old = self._allocate(rows, length + extra, key_states)
            self._buffers[0][:, :, :length] = old_keys
            self._buffers[1][:, :, :length] = old_values
            self._give_back(old)
        keys, values = self._buffers
        keys[:rows, :, length:length + extra] = key_states
        values[:rows, :, length:length + extra] = value_states
        self._view(rows, length + extra)
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        # Straight into buffers with room, rather than a repeat the next update would copy.
        if not self.is_initialized or self.keys.dim() != 4:
            return
        old_keys, old_values = self.keys, self.values
        batch, heads, length, dim = old_keys.shape
        old = self._allocate(batch * repeats, length, old_keys)
        keys, values = self._buffers
        # Row b * repeats + r of the new batch is row b of the old one (repeat_interleave order).
        keys.view(batch, repeats, heads, -1, dim)[:, :, :, :length] = old_keys[:, None]
        values.view(batch, repeats, heads, -1, dim)[:, :, :, :length] = old_values[:, None]
        self._give_back(old)
        self._view(batch * repeats, length)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if not self._owns(self.keys):
            super().reorder_cache(beam_idx)
            return
        rows, length = beam_idx.shape[0], self.keys.shape[-2]
        index = beam_idx.to(self.keys.device)
        old_keys, old_values = self.keys, self.values
        if rows and bool((index[1:] > index[:-1]).all()):
            # A compaction: row k comes from row index[k] >= k. Only the rows that move are
            # copied (gathered first, so no source is overwritten before it is read).
            moved = (index != torch.arange(rows, device=index.device)).nonzero().squeeze(1)
            if moved.numel():
                keys, values = self._buffers
                keys[moved, :, :length] = old_keys[index[moved]]
                values[moved, :, :length] = old_values[index[moved]]
        else:
            old = self._allocate(rows, length, old_keys)
            keys, values = self._buffers
            torch.index_select(old_keys, 0, index, out=keys[:, :, :length])
            torch.index_select(old_values, 0, index, out=values[:, :, :length])
            self._give_back(old)
        self._view(rows, length)


def new_cache(model: Any, reserve: int, pool: BufferPool | None = None) -> DynamicCache | None:
    """A cache whose every layer is a `GrowingKVLayer` with `reserve` tokens of room (and
    buffers from `pool`, if given), or None
    when the model's cache has other layer kinds (sliding-window, linear attention): those keep
    the cache the model makes for itself, and no prefix sharing."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    cache = DynamicCache(config=config)
    if not cache.layers or not all(type(layer) is DynamicLayer for layer in cache.layers):
        return None
    cache.layers = [GrowingKVLayer(reserve, pool) for _ in cache.layers]
    return cache




def cache_keyword(model: Any) -> str:
    """The forward's name for the KV cache: `cache` from transformers 5.25 on, which keeps
    `past_key_values` only as a deprecated alias (and drops a cache passed under it when
    `cache` is also given, as a wrapping forward does), else `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "cache" if "cache" in inspect.signature(base.forward).parameters \
            else "past_key_values"
    except (TypeError, ValueError):
        return "past_key_values"


def cache_field(output: Any) -> str:
    """The output's field for the cache: `cache` from transformers 5.25 on, where the old
    name is an alias that logs a deprecation warning (see `cache_keyword`)."""
    return "cache" if "cache" in getattr(output, "__dataclass_fields__", {}) \
        else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The cache a forward returned (see `cache_field`)."""
    return getattr(output, cache_field(output), None)
