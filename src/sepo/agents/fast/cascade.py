"""Cascade attention for batched sampling: the shared prompt prefix's keys and values kept once.

Every prompt of one engine step starts with the same system prompt (IPD: 135 `tiny` tokens of
178–278). Repeating its key/value cache over the batch's rows (the plain way) makes every row
carry its own copy: the repeat itself, every compaction of the batch and every copy of a
repeated prompt's row move those copies, and every decoding step reads them once per row. In
the profile of 256 batched IPD episodes these copies were a quarter of the CPU time.

Here the prefix's cache stays a batch of one, and each attention call is split in two (the
"cascade" of FlashInfer; the same identity as FlashAttention's blockwise softmax):

- every query row against the shared prefix, as ONE batch-1 attention whose queries are all the
  rows' (the prefix is read once, and it is a matrix product rather than many vector ones);
- every row against its own tokens (its prompt after the prefix, then its completion), with
  the row's padding and causal mask;

and the two softmax-weighted outputs merged by their log-sum-exps:
out = (e^{lse_a} out_a + e^{lse_b} out_b) / (e^{lse_a} + e^{lse_b}). That is exact; only float
rounding differs from one attention over the concatenation (tests/test_sampling_cache.py).

It is an attention function registered with `transformers`' `AttentionInterface` and switched on
only inside `cascade_attention(model)`, so it works for any model whose attention layers go
through that interface. It runs where it was measured (docs/BENCHMARKS.md, and
research/2026-11-23-lm-play-prompts-cascade-draw.md): on CPU, through torch's CPU
flash-attention kernel, which returns the log-sum-exp the merge needs, and for the
plain-attention families of `CASCADE_MODEL_TYPES`. Everything else keeps the repeated cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from transformers import AttentionInterface

#: The name the attention function is registered under.
CASCADE_ATTENTION = "sepo_cascade"

#: Model families whose attention is plain scaled dot-product attention over the cache (no
#: logit soft-capping, attention sinks or sliding windows, which `cascade_attention_forward`
#: does not implement). Checked by `config.model_type`; `tiny` and SmolLM2 are "llama".
CASCADE_MODEL_TYPES = frozenset({"llama", "qwen2", "qwen3"})

#: Per layer, the shared prefix's keys and values, each (1, kv_heads, prefix_length, head_dim).
PrefixCache = Sequence[tuple[torch.Tensor, torch.Tensor]]


def cascade_supported(model: Any) -> bool:
    """Whether `cascade_attention` can run this model's sampling: a listed family, on CPU,
    with its attention going through the `AttentionInterface` (sdpa or eager)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in CASCADE_MODEL_TYPES:
        return False
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    try:
        return next(model.parameters()).device.type == "cpu"
    except (StopIteration, AttributeError):
        return False


@contextmanager
def attention_implementation(model: Any, name: str) -> Iterator[None]:
    """While inside, `model`'s attention layers run the `AttentionInterface` function `name`
    (they read the config at every call); the model's own choice again on exit."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before


def cascade_attention(model: Any) -> AbstractContextManager[None]:
    """While inside, `model`'s attention layers run `cascade_attention_forward`: its forward
    calls must pass `sepo_prefix` and a 4-D row mask (`row_attention_mask`)."""
    return attention_implementation(model, CASCADE_ATTENTION)


def row_attention_mask(mask: torch.Tensor, query_length: int, dtype: torch.dtype) -> torch.Tensor:
    """The additive (batch, 1, query_length, keys) mask of the rows' own tokens, from their 2-D
    mask of real (1) and padding (0) tokens whose last `query_length` columns are the queries:
    a query sees the real tokens up to itself. A padding query also sees itself, so no row of
    the mask is empty (the kernel would return a log-sum-exp of 0 for an empty row, not -inf);
    what a padding position computes is never seen by a real token."""
    keys = mask.shape[1]
    key_position = torch.arange(keys, device=mask.device)
    query_position = torch.arange(keys - query_length, keys, device=mask.device)
    causal = key_position[None, :] <= query_position[:, None]
    allowed = (mask.bool()[:, None, None, :] & causal) | (key_position[None, :]
                                                          == query_position[:, None])
    return torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill_(
        ~allowed, float("-inf"))


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
            mask: torch.Tensor | None, scale: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention and its log-sum-exp (float32), through torch's CPU flash kernel."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, attn_mask=mask, scale=scale)
    return out, lse.float()


def cascade_attention_forward(module: Any, query: torch.Tensor, key: torch.Tensor,
                              value: torch.Tensor, attention_mask: torch.Tensor | None,
                              scaling: float | None = None, dropout: float = 0.0,
                              sepo_prefix: PrefixCache | None = None,
                              **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention of `query` (batch, heads, q, dim) over the shared prefix of
    `sepo_prefix[module.layer_idx]` followed by each row's own `key`/`value` (batch, kv_heads,
    keys, dim) under `attention_mask` (`row_attention_mask`). Returns (batch, q, heads, dim),
    as `transformers`' attention functions do."""
    if sepo_prefix is None or attention_mask is None:
        raise RuntimeError("cascade attention needs the shared prefix's cache and the row mask "
                           "(run the model inside sepo's BatchState)")
    prefix_keys, prefix_values = sepo_prefix[module.layer_idx]
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads  # grouped-query attention: query head h reads kv head h // groups
    # (1) All rows' queries against the one prefix: a batch of one with batch·groups·q queries.
    shared_q = query.reshape(batch, kv_heads, groups * q_len, dim).transpose(0, 1).reshape(
        1, kv_heads, batch * groups * q_len, dim)
    out_a, lse_a = _attend(shared_q, prefix_keys, prefix_values, None, scaling)
    out_a = out_a.reshape(kv_heads, batch, groups * q_len, dim).transpose(0, 1)
    lse_a = lse_a.reshape(kv_heads, batch, groups * q_len).transpose(0, 1)
    # (2) Each row against its own tokens; a kv head's query groups share its mask.
    own_q = query.reshape(batch, kv_heads, groups * q_len, dim)
    mask = attention_mask if groups == 1 else attention_mask.repeat(1, 1, groups, 1)
    out_b, lse_b = _attend(own_q, key, value, mask, scaling)
    # (3) Merge by the log-sum-exps: out_a's weight is e^lse_a / (e^lse_a + e^lse_b).
    weight_a = torch.sigmoid(lse_a - lse_b).unsqueeze(-1)
    out = out_b.float() + weight_a * (out_a.float() - out_b.float())
    out = out.to(query.dtype).reshape(batch, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(CASCADE_ATTENTION, cascade_attention_forward)
