"""Batched sampling with a KV cache: the one generation call of an engine step.

`sample_batch` generates a completion for every prompt of a step in one batched decoding loop
(prefill, then one token per step for all live sequences). It is written here rather than
delegated to `transformers`' `generate` for what a rollout batch needs and `generate` cannot
do:

- **Finished sequences leave the batch.** Answers end at very different lengths (an action
  line after 3 tokens, a rambling text at `max_new_tokens`); `generate` keeps computing every
  finished row until the last one ends. Here the batch (and its KV cache, through the cache's
  own `reorder_cache`) is compacted as rows finish, so a step costs what its live rows cost.
- **A shared prompt prefix is computed once.** Every prompt of one game starts with the same
  system prompt (150 of ~230 tokens for IPD with `tiny`): its KV cache comes from one batch-1
  pass, repeated over the batch.
- **Identical prompts are computed once.** A group's rollouts share their first round's
  prompt, and so do episodes whose histories agree (in 64 IPD episodes of `tiny`, 237 of 512
  prompts were distinct): the prefill runs the distinct prompts and copies their rows.
- **The log-probabilities are recorded** as each token is drawn, in the trainer's convention.
- **Sampling draws from a private `torch.Generator`**: same seed, same play, and the caller's
  global RNG is left alone; and no field of the model's own generation config (e.g. a top-k)
  can slip into the policy.

Each row sees exactly its own prompt: left padding is masked out and position ids count real
tokens only, so batched and one-at-a-time greedy decoding agree (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from sepo.agents.chat import accepts_logits_to_keep, left_pad, model_device

#: Shortest prompt prefix shared by a whole batch that is computed once (one batch-1 forward
#: pass) and reused by every sequence; below it the extra call costs more than it saves.
MIN_SHARED_PREFIX = 32


class RowWatcher(Protocol):
    """Decides, token by token, when each row's completion is over."""

    def update(self, rows: Sequence[int], tokens: Sequence[int]) -> list[bool]:
        """Append `tokens[k]` to row `rows[k]`'s completion; whether each row is now done."""
        ...


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix common to all sequences, leaving each at least one token
    (generation starts from a sequence's last prompt token)."""
    if not sequences:
        return 0
    # The lexicographic min and max differ first where any two sequences differ.
    low, high = min(sequences, key=list), max(sequences, key=list)
    limit = min(len(s) for s in sequences) - 1
    n = 0
    while n < limit and low[n] == high[n]:
        n += 1
    return max(0, n)


class GrowingKVLayer(DynamicLayer):
    """A full-attention key/value cache layer that appends in place into room reserved at the
    end of its buffers. (`DynamicLayer` concatenates, copying the whole cache at every decoding
    step: for a batch of 64 rollouts that copy costs more than the step's matmuls.) `keys` and
    `values` are views of the valid part of the buffers."""

    def __init__(self, reserve: int) -> None:
        super().__init__()
        self.reserve = reserve
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def _owns(self, tensor: torch.Tensor) -> bool:
        """Whether `tensor` (the current keys) is still a view of this layer's buffers (the
        base class's `batch_repeat_interleave` replaces it with a fresh tensor)."""
        return (self._buffers is not None and tensor.dim() == 4
                and tensor.data_ptr() == self._buffers[0].data_ptr()
                and tensor.shape[0] == self._buffers[0].shape[0])

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.keys = key_states[:, :, :0]
            self.values = value_states[:, :, :0]
        length, extra = self.keys.shape[-2], key_states.shape[-2]
        if not self._owns(self.keys) or length + extra > self._buffers[0].shape[-2]:
            batch, heads, _, dim = key_states.shape
            shape = (batch, heads, length + extra + self.reserve, dim)
            keys, values = key_states.new_empty(shape), value_states.new_empty(shape)
            keys[:, :, :length] = self.keys
            values[:, :, :length] = self.values
            self._buffers = (keys, values)
        keys, values = self._buffers
        keys[:, :, length:length + extra] = key_states
        values[:, :, length:length + extra] = value_states
        self.keys, self.values = keys[:, :, :length + extra], values[:, :, :length + extra]
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        # Straight into buffers with room, rather than a repeat the next update would copy.
        if not self.is_initialized or self.keys.dim() != 4:
            return
        batch, heads, length, dim = self.keys.shape
        shape = (batch * repeats, heads, length + self.reserve, dim)
        keys, values = self.keys.new_empty(shape), self.values.new_empty(shape)
        # Row b * repeats + r of the new batch is row b of the old one (repeat_interleave order).
        keys.view(batch, repeats, heads, -1, dim)[:, :, :, :length] = self.keys[:, None]
        values.view(batch, repeats, heads, -1, dim)[:, :, :, :length] = self.values[:, None]
        self._buffers = (keys, values)
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if not self._owns(self.keys):
            super().reorder_cache(beam_idx)
            return
        length = self.keys.shape[-2]
        keys, values = self._buffers
        keys = keys.index_select(0, beam_idx.to(keys.device))
        values = values.index_select(0, beam_idx.to(values.device))
        self._buffers = (keys, values)
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]


def new_cache(model: Any, reserve: int) -> DynamicCache | None:
    """A cache whose every layer is a `GrowingKVLayer` with `reserve` tokens of room, or None
    when the model's cache has other layer kinds (sliding-window, linear attention): those keep
    the cache the model makes for itself, and no prefix sharing."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    cache = DynamicCache(config=config)
    if not cache.layers or not all(type(layer) is DynamicLayer for layer in cache.layers):
        return None
    cache.layers = [GrowingKVLayer(reserve) for _ in cache.layers]
    return cache


def draw_tokens(logits: torch.Tensor, temperature: float, top_p: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """One token per row: the argmax when `temperature` is 0, else a draw from the
    temperature-scaled softmax restricted to the top-p nucleus (the smallest set of most
    probable tokens whose mass reaches `top_p`; the most probable token always stays)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    # A broken model's NaN logits must not stop a run: they become very unlikely tokens.
    logits = torch.nan_to_num(logits, nan=-1e4, posinf=1e4, neginf=-1e4)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p >= 1.0:
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    choice = torch.multinomial(sorted_probs, 1, generator=generator)
    return order.gather(1, choice).squeeze(1)


class BatchState:
    """A batch of sequences being decoded together: the KV cache, the attention mask and the
    last position of every row. `prefill` makes one; `step` feeds one token per row; `keep`
    drops rows (compaction)."""

    def __init__(self, model: Any, cache: Any, mask: torch.Tensor, last_position: torch.Tensor,
                 logits: torch.Tensor) -> None:
        self.model = model
        self.cache = cache
        self.mask = mask
        self.last_position = last_position
        #: Next-token logits of every row (float32, batch × vocabulary).
        self.logits = logits
        self._keep_last = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}

    @classmethod
    def prefill(cls, model: Any, prompts: Sequence[Sequence[int]], *, pad_id: int, reserve: int,
                share_prefix: bool = True) -> BatchState:
        """Run the prompts (left-padded) through the model, each distinct prompt once (the
        rows of a repeated prompt are copies of its row). A prefix of at least
        `MIN_SHARED_PREFIX` tokens common to all of them is computed once, in a batch-1 pass,
        and its KV cache repeated over the batch. `reserve`: tokens of cache room to keep for
        the decoding steps."""
        n = len(prompts)
        # Identical prompts (every rollout of a group in its first round; episodes whose
        # histories agree) are run once, and their rows copied from it.
        distinct: dict[tuple[int, ...], int] = {}
        rows = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
        if len(distinct) < n:
            batch = cls.prefill(model, list(distinct), pad_id=pad_id, reserve=reserve,
                                share_prefix=share_prefix)
            batch.keep(torch.tensor(rows, dtype=torch.long, device=batch.logits.device))
            return batch
        device = model_device(model)
        keep_last = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
        cache = new_cache(model, reserve=reserve)
        shared = shared_prefix_length(prompts) if share_prefix and n > 1 else 0
        if cache is not None and shared >= MIN_SHARED_PREFIX:
            prefix = torch.tensor([list(prompts[0][:shared])], dtype=torch.long, device=device)
            model(input_ids=prefix, past_key_values=cache, use_cache=True, **keep_last)
            cache.batch_repeat_interleave(n)
            # [shared prefix][left padding][rest of the prompt]: the hole is masked out and the
            # position ids count real tokens, so each row sees exactly its own prompt.
            input_ids, rest_mask, rest_positions = left_pad([p[shared:] for p in prompts],
                                                            pad_id, device)
            mask = torch.cat([torch.ones((n, shared), dtype=rest_mask.dtype, device=device),
                              rest_mask], dim=1)
            positions = rest_positions + shared
        else:
            input_ids, mask, positions = left_pad(prompts, pad_id, device)
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                    past_key_values=cache, use_cache=True, **keep_last)
        return cls(model, out.past_key_values, mask, positions[:, -1],
                   out.logits[:, -1, :].float())

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows, in this order (a row listed twice is copied)."""
        self.cache.reorder_cache(rows)
        self.mask, self.last_position = self.mask[rows], self.last_position[rows]
        self.logits = self.logits[rows]

    def step(self, tokens: torch.Tensor) -> None:
        """Append one token to every row and compute the next logits."""
        ones = torch.ones((self.mask.shape[0], 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        self.last_position = self.last_position + 1
        out = self.model(input_ids=tokens[:, None].to(self.mask.device), attention_mask=self.mask,
                         position_ids=self.last_position[:, None], past_key_values=self.cache,
                         use_cache=True, **self._keep_last)
        self.cache = out.past_key_values
        self.logits = out.logits[:, -1, :].float()


@torch.no_grad()
def sample_batch(model: Any, prompts: Sequence[Sequence[int]], *, temperature: float,
                 top_p: float, max_new_tokens: int, pad_id: int, watcher: RowWatcher,
                 generator: torch.Generator | None = None,
                 share_prefix: bool = True) -> list[tuple[list[int], list[float]]]:
    """Sample a completion for every prompt, in one batched decoding loop.

    Returns, per prompt, the generated token ids (up to the token at which `watcher` said the
    row was done, or `max_new_tokens`) and their log-probabilities under
    log_softmax(logits / T), T = `temperature` (1 when it is 0, greedy). `top_p` changes what
    can be drawn, not the recorded log-probabilities.
    """
    n = len(prompts)
    if n == 0:
        return []
    logprob_temperature = temperature if temperature > 0 else 1.0
    tokens: list[list[int]] = [[] for _ in range(n)]
    logprobs: list[list[float]] = [[] for _ in range(n)]
    batch = BatchState.prefill(model, prompts, pad_id=pad_id, reserve=max_new_tokens,
                               share_prefix=share_prefix)
    rows = list(range(n))  # rows[k]: the prompt of batch row k
    finished: set[int] = set()
    for step in range(max_new_tokens):
        drawn = draw_tokens(batch.logits, temperature, top_p, generator)
        drawn_lp = torch.log_softmax(batch.logits / logprob_temperature, dim=-1).gather(
            1, drawn[:, None]).squeeze(1)
        live = [k for k, r in enumerate(rows) if r not in finished]
        drawn_list, lp_list = drawn.tolist(), drawn_lp.tolist()
        for k in live:
            tokens[rows[k]].append(drawn_list[k])
            logprobs[rows[k]].append(lp_list[k])
        done = watcher.update([rows[k] for k in live], [drawn_list[k] for k in live])
        finished.update(rows[k] for k, d in zip(live, done, strict=True) if d)
        if len(finished) == n or step == max_new_tokens - 1:
            break
        # Compact once a quarter of the batch has finished: the copy of the cache it costs is
        # about one decoding step, and finished rows would cost their share of every step.
        stale = sum(r in finished for r in rows)
        if stale and 4 * stale >= len(rows):
            keep = [k for k, r in enumerate(rows) if r not in finished]
            index = torch.tensor(keep, dtype=torch.long, device=drawn.device)
            batch.keep(index)
            rows, drawn = [rows[k] for k in keep], drawn[index]
        batch.step(drawn)
    return list(zip(tokens, logprobs, strict=True))
