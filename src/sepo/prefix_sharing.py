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
(`sepo.agents.sampling`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from sepo.agents.sampling import MIN_SHARED_PREFIX, new_cache


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

    def forward(input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        plain = (input_ids is None or any(kwargs.get(k) is not None for k in
                                          ("past_key_values", "inputs_embeds", "position_ids")))
        shared = 0 if plain else _shared_by(backbone, input_ids, attention_mask)
        if not shared:
            return original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("use_cache", "past_key_values")}
        cache = new_cache(backbone, reserve=0)
        prefix = original(input_ids=input_ids[:1, :shared], past_key_values=cache,
                          use_cache=True, **kwargs)
        rows = input_ids.shape[0]
        cache.batch_repeat_interleave(rows)
        # Positions count on from the cache's length, and the mask covers prefix + rest.
        out = original(input_ids=input_ids[:, shared:], attention_mask=attention_mask,
                       past_key_values=cache, use_cache=True, **kwargs)
        out.last_hidden_state = torch.cat(
            [prefix.last_hidden_state.expand(rows, -1, -1), out.last_hidden_state], dim=1)
        out.past_key_values = None  # a training forward: the caller keeps no cache
        return out

    backbone.forward = forward
    try:
        yield
    finally:
        del backbone.forward  # the class's forward again
