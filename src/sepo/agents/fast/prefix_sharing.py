"""Running the prompt prefix a training batch shares once: SFT's and the SEPO loss's forwards.

Every decision of one game starts with the same system prompt: 135 `tiny` tokens of an IPD
prompt's 178–278, 201 of Kuhn's 230–430. A training batch (an SFT batch, a micro-batch of the
SEPO loss) is a stack of such sequences, right-padded, so most of its forward and backward work
is the same tokens once per row. Inside `shared_prompt_prefix(model)`, the model's transformer
backbone runs the leading tokens every row agrees on once, as a batch of one, repeats their keys
and values over the rows, and runs the rest of each row on them. The hidden states are the full
pass's up to float rounding (the prefix's are repeated over the rows), so the logits, the loss
and, through both passes, the gradients are too (tests/test_sft.py, tests/test_train.py).

It is a patch of the backbone instance's `forward`, removed on exit; weights and their names
are untouched. Anything it was not written for takes the backbone's own forward: fewer than
`MIN_SHARED_PREFIX` common tokens (a batch mixing games), a batch of one, a cache or
`inputs_embeds` or `position_ids` passed in, gradient checkpointing (whose re-run forward would
write the rows' keys into the shared cache a second time), and caches that are not plain full
attention (sliding-window or linear-attention layers). Generation shares its prefix its own way
(`sepo.agents.fast.sampling`).

The SEPO loss goes one step further where it can (`packed_completion_logits`): after the shared
prefix, the rows' remaining tokens run *packed*, one after another in a single sequence with no
padding, so the matmuls, norms and MLPs of the forward and backward passes do no padding work
(a Kuhn micro-batch of 64 decisions was 21% padding), and only the positions that predict a
completion token go through the LM head (not the whole window `logits_to_keep` spans in a
padded batch). Attention alone sees the rows as rows: `packed_attention_forward` gathers each
row's queries, keys and values into a padded (rows, width) block, attends over the shared
prefix plus the row's own tokens, and scatters the result back. It runs where the cascade
attention of generation runs (`cascade_supported`: Llama, Qwen2, Qwen3 on CPU), the only place
it was measured; elsewhere the padded batch above is used.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface

from sepo.agents.chat import accepts_logits_to_keep, model_device
from sepo.agents.fast.cache import cache_field, cache_keyword, new_cache
from sepo.agents.fast.cascade import attention_implementation, cascade_supported
from sepo.agents.fast.sampling import MIN_SHARED_PREFIX, shared_prefix_length

#: The KV cache's keyword in a forward, before and from transformers 5.25 (`cache_keyword`).
CACHE_NAMES = ("past_key_values", "cache")

#: The name the packed rows' attention function is registered under.
PACKED_ATTENTION = "sepo_packed"


def _backbone(model: Any) -> Any | None:
    """The transformer under the LM head (through a PEFT wrapper), or None."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(causal_lm, "base_model", None)
    if backbone is None or backbone is causal_lm or new_cache(backbone, reserve=0) is None:
        return None
    return backbone


def _checkpointing(module: Any) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) is True for m in module.modules())


def shared_prefix_tokens(model: Any, input_ids: torch.Tensor,
                         attention_mask: torch.Tensor | None = None) -> int:
    """How many leading tokens of this right-padded batch `shared_prompt_prefix` runs once:
    the positions where every row holds the same real token, leaving at least one token per
    row to run; 0 when that is under `MIN_SHARED_PREFIX` or sharing does not apply."""
    backbone = _backbone(model)
    return 0 if backbone is None else _shared_by(backbone, input_ids, attention_mask)


def _shared_by(backbone: Any, input_ids: torch.Tensor,
               attention_mask: torch.Tensor | None) -> int:
    """`shared_prefix_tokens` for a backbone already resolved (the patched forward's case)."""
    if input_ids.dim() != 2 or input_ids.shape[0] < 2 or _checkpointing(backbone):
        return 0
    agree = (input_ids == input_ids[:1]).all(dim=0)
    if attention_mask is not None:
        agree &= attention_mask.bool().all(dim=0)
    shared = min(int(agree.long().cumprod(0).sum()), input_ids.shape[1] - 1)
    return shared if shared >= MIN_SHARED_PREFIX else 0


@contextmanager
def shared_prompt_prefix(model: Any) -> Iterator[None]:
    """While inside, `model`'s backbone runs a batch's shared prompt prefix once (see the
    module docstring)."""
    backbone = _backbone(model)
    if backbone is None:
        yield
        return
    original = backbone.forward
    keyword = cache_keyword(backbone)

    def forward(input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        plain = (input_ids is None or any(kwargs.get(k) is not None for k in
                                          (*CACHE_NAMES, "inputs_embeds", "position_ids")))
        shared = 0 if plain else _shared_by(backbone, input_ids, attention_mask)
        if not shared:
            return original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        # The caller's `cache=None` must go too: given both names, transformers keeps `cache`.
        kwargs = {k: v for k, v in kwargs.items() if k not in ("use_cache", *CACHE_NAMES)}
        cache = new_cache(backbone, reserve=0)
        prefix = original(input_ids=input_ids[:1, :shared], use_cache=True,
                          **{keyword: cache}, **kwargs)
        rows = input_ids.shape[0]
        cache.batch_repeat_interleave(rows)
        # Positions count on from the cache's length, and the mask covers prefix + rest.
        out = original(input_ids=input_ids[:, shared:], attention_mask=attention_mask,
                       use_cache=True, **{keyword: cache}, **kwargs)
        out.last_hidden_state = torch.cat(
            [prefix.last_hidden_state.expand(rows, -1, -1), out.last_hidden_state], dim=1)
        setattr(out, cache_field(out), None)  # a training forward: the caller keeps no cache
        return out

    backbone.forward = forward
    try:
        yield
    finally:
        del backbone.forward  # the class's forward again


# ------------------------------------------------------------------ packed rows (SEPO loss)
@dataclass(frozen=True, slots=True)
class PackedRows:
    """Where `rows` sequences of different lengths sit in one packed sequence of N tokens, and
    their padded (rows, width) view for attention. Slot (b, s) is row b's s-th token after the
    shared prefix."""

    rows: int
    width: int
    gather: torch.Tensor  # (rows·width,) packed index of each slot; 0 for a padding slot
    scatter: torch.Tensor  # (N,) slot b·width + s of each packed token


def packing_supported(model: Any) -> bool:
    """Whether `packed_completion_logits` can run this model (see the module docstring)."""
    backbone = _backbone(model)
    return (backbone is not None and not _checkpointing(backbone) and cascade_supported(model)
            and accepts_logits_to_keep(model))


def _repeat_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """Grouped-query attention: kv head h serves query heads h·g … h·g + g − 1."""
    return x if x.shape[1] == heads else x.repeat_interleave(heads // x.shape[1], dim=1)


def packed_attention_forward(module: Any, query: torch.Tensor, key: torch.Tensor,
                             value: torch.Tensor, attention_mask: torch.Tensor | None,
                             scaling: float | None = None, dropout: float = 0.0,
                             sepo_packed: PackedRows | None = None,
                             **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention of the packed queries (1, heads, N, dim) over the shared prefix and each row's
    own tokens: `key`/`value` are (1, kv_heads, P + N, dim), the prefix's P cached positions
    then the packed ones; `attention_mask` is the (rows, 1, width, P + width) boolean mask of
    `packed_completion_logits`. Returns (1, N, heads, dim), as `transformers`' attention
    functions do."""
    if sepo_packed is None or attention_mask is None:
        raise RuntimeError("packed attention needs the rows' layout and mask (run the model "
                           "through sepo.agents.fast.prefix_sharing.packed_completion_logits)")
    layout = sepo_packed
    heads, n, dim = query.shape[1], query.shape[2], query.shape[3]
    prefix = key.shape[2] - n

    def as_rows(x: torch.Tensor) -> torch.Tensor:  # (1, h, N, dim) → (rows, h, width, dim)
        return x[0].index_select(1, layout.gather).view(
            x.shape[1], layout.rows, layout.width, dim).transpose(0, 1)

    keys, values = as_rows(key[:, :, prefix:]), as_rows(value[:, :, prefix:])
    if prefix:
        keys = torch.cat([key[:, :, :prefix].expand(layout.rows, -1, -1, -1), keys], dim=2)
        values = torch.cat([value[:, :, :prefix].expand(layout.rows, -1, -1, -1), values], dim=2)
    out = torch.nn.functional.scaled_dot_product_attention(
        as_rows(query), _repeat_heads(keys, heads), _repeat_heads(values, heads),
        attn_mask=attention_mask, dropout_p=dropout if module.training else 0.0, scale=scaling)
    out = out.transpose(1, 2).reshape(layout.rows * layout.width, heads, dim)
    return out.index_select(0, layout.scatter).unsqueeze(0), None


AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)


def packed_prefix_tokens(sequences: Sequence[Sequence[int]], scored_from: Sequence[int]) -> int:
    """How many leading tokens `packed_completion_logits` runs once: those every sequence
    shares, short of every row's first scored position; 0 when under `MIN_SHARED_PREFIX`."""
    shared = min(shared_prefix_length(sequences), min(scored_from) - 1)
    return shared if shared >= MIN_SHARED_PREFIX and len(sequences) > 1 else 0


def packed_completion_logits(model: Any, sequences: Sequence[Sequence[int]],
                             scored_from: Sequence[int]) -> torch.Tensor | None:
    """The logits that predict `sequences[i][scored_from[i]:]`, for i in order, stacked into
    (Σ scored tokens, vocab); None where packing does not apply (`packing_supported`).

    The leading tokens every sequence shares (at least `MIN_SHARED_PREFIX`, and short of every
    row's first scored position) run once as a batch of one; the rest of every row runs packed
    (see the module docstring). The logits are those of one padded pass over the sequences,
    up to float rounding (tests/test_train.py)."""
    if not packing_supported(model):
        return None
    device = model_device(model)
    shared = packed_prefix_tokens(sequences, scored_from)
    backbone = _backbone(model)
    cache = new_cache(backbone, reserve=0)
    if shared:
        backbone(input_ids=torch.tensor([list(sequences[0][:shared])], device=device),
                 use_cache=True, **{cache_keyword(backbone): cache})
    lengths = [len(seq) - shared for seq in sequences]
    rows, width = len(sequences), max(lengths)
    starts = [0]
    for length in lengths[:-1]:
        starts.append(starts[-1] + length)
    slot = torch.arange(width)
    valid = slot[None, :] < torch.tensor(lengths)[:, None]  # (rows, width)
    gather = torch.where(valid, torch.tensor(starts)[:, None] + slot[None, :], 0).flatten()
    scatter = (torch.arange(rows)[:, None] * width + slot[None, :])[valid]
    # A query sees the whole prefix and its row's tokens up to itself; a padding slot sees
    # itself too, so no row of the mask is empty (its output is never scattered back).
    causal = slot[None, :] <= slot[:, None]
    own = causal[None] & (valid[:, None, :] | torch.eye(width, dtype=torch.bool)[None])
    mask = torch.cat([torch.ones((rows, width, shared), dtype=torch.bool), own], dim=2)
    # Position p of a row predicts its token p + 1: keep p = scored_from − 1 … length − 2.
    keep = torch.cat([torch.arange(start + from_ - 1 - shared, start + length - 1)
                      for start, from_, length in zip(starts, scored_from, lengths, strict=True)])
    packed = torch.tensor([t for seq in sequences for t in seq[shared:]], device=device)
    positions = torch.cat([torch.arange(shared, shared + length) for length in lengths])
    layout = PackedRows(rows, width, gather.to(device), scatter.to(device))
    with attention_implementation(model, PACKED_ATTENTION):
        out = model(input_ids=packed[None], position_ids=positions[None].to(device),
                    attention_mask=mask[:, None].to(device), use_cache=True,
                    logits_to_keep=keep.to(device), sepo_packed=layout,
                    **{cache_keyword(model): cache})
    return out.logits[0]
