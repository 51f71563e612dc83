"""The fast engine's batched sampling: the one generation call of an engine step, KV-cached.

`sample_batch` generates a completion for every prompt of a step in one batched decoding loop
(prefill, then one token per step for all live sequences). It is written here rather than
delegated to `transformers`' `generate` (which the plain engine, `sepo.agents.plain`, uses)
for what a rollout batch needs and `generate` cannot do:

- **Finished sequences leave the batch.** Answers end at very different lengths (an action
  line after 3 tokens, a rambling text at `max_new_tokens`); `generate` keeps computing every
  finished row until the last one ends. Here the batch is compacted as rows finish, in place
  (only the rows whose place changes are copied), so a step costs what its live rows cost.
- **A shared prompt prefix is computed and stored once.** Every prompt of one game starts
  with the same system prompt (135 of 178–278 tokens for IPD with `tiny`): it runs in one
  batch-1 pass, and on CPU its cache stays a batch of one, read by cascade attention
  (`sepo.agents.fast.cascade`) instead of being copied into every row.
- **Identical prompts are computed once.** A group's rollouts share their first round's
  prompt, and so do episodes whose histories agree (in 64 IPD episodes of `tiny`, 237 of 512
  prompts were distinct): the prefill runs the distinct prompts and copies their rows.
- **The prefill runs in chunks** of similar-length prompts, and an agent's cache buffers are
  reused from one engine step to the next (`BufferPool`), so no pass allocates the large,
  fresh tensors whose page faults cost more than their contents on CPU.
- **The log-probabilities are recorded** as each token is drawn, in the trainer's convention.
- **Sampling draws from a private `torch.Generator`**: same seed, same play, and the caller's
  global RNG is left alone; and no field of the model's own generation config (e.g. a top-k)
  can slip into the policy. Or from one generator per prompt (training rollouts,
  `sepo.engine.SAMPLING_KEY`), so that a row's tokens do not depend on its batch.

Each row sees exactly its own prompt: left padding is masked out and position ids count real
tokens only, so batched and one-at-a-time greedy decoding agree (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sepo.agents.chat import accepts_logits_to_keep, left_pad, model_device
from sepo.agents.decoding import RowGenerators, RowWatcher, TokenChooser, draw_tokens
from sepo.agents.fast.cache import (
    BufferPool,
    GrowingKVLayer,
    cache_keyword,
    new_cache,
    returned_cache,
)
from sepo.agents.fast.cascade import (
    PrefixCache,
    cascade_attention,
    cascade_supported,
    row_attention_mask,
)

#: Shortest prompt prefix shared by a whole batch that is computed once (one batch-1 forward
#: pass) and reused by every sequence; below it the extra call costs more than it saves.
MIN_SHARED_PREFIX = 32

#: Tokens of cache room the prefill leaves for decoding (a row that outgrows it gets room again:
#: one copy of the then compacted batch). Most answers end within it (an action line is 3–10
#: tokens); reserving `max_new_tokens` (96 with reasoning) made every copy of the cache half
#: again as large for the few rows that run long.
DECODE_RESERVE = 32

#: Prompt tokens (rows × longest rest) per forward pass of the prefill. Larger passes are no
#: faster, and their activations (the MLP's 3 × hidden per token) pass glibc's 32 MB threshold
#: for a fresh `mmap`, whose page faults cost more than the copy into them.
PREFILL_CHUNK_TOKENS = 8192


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


class BatchState:
    """A batch of sequences being decoded together: the KV cache, the attention mask and the
    last position of every row. `prefill` makes one; `step` feeds one token per row; `keep`
    drops rows (compaction)."""

    def __init__(self, model: Any, cache: Any, mask: torch.Tensor, last_position: torch.Tensor,
                 prefix: PrefixCache | None = None) -> None:
        self.model = model
        #: The rows' own cache: with `prefix`, the tokens after it; else the whole sequences.
        self.cache = cache
        #: Real (1) and padding (0) tokens of every row's cached sequence, as in `cache`.
        self.mask = mask
        self.last_position = last_position
        #: The shared prefix's cache, kept once (`sepo.agents.fast.cascade`), or None.
        self.prefix = prefix
        #: Next-token logits of every row (float32, batch × vocabulary); set by `forward`.
        self.logits = torch.empty(0)
        self._keep_last = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
        self._cache_keyword = cache_keyword(model)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> None:
        """Run new tokens (batch × k, already in `mask`) through the model into the cache."""
        if self.prefix is None:
            out = self.model(input_ids=input_ids, attention_mask=self.mask,
                             position_ids=positions, use_cache=True,
                             **{self._cache_keyword: self.cache}, **self._keep_last)
        else:
            mask = row_attention_mask(self.mask, input_ids.shape[1], self.model.dtype)
            with cascade_attention(self.model):
                out = self.model(input_ids=input_ids, attention_mask=mask,
                                 position_ids=positions, use_cache=True,
                                 sepo_prefix=self.prefix, **{self._cache_keyword: self.cache},
                                 **self._keep_last)
        self.cache = returned_cache(out)
        self.last_position = positions[:, -1]
        self.logits = out.logits[:, -1, :].float()

    @classmethod
    def prefill(cls, model: Any, prompts: Sequence[Sequence[int]], *, pad_id: int, reserve: int,
                share_prefix: bool = True, cascade: bool = True,
                pool: BufferPool | None = None) -> BatchState:
        """Run the prompts through the model into one batch of rows, in their order.

        - Identical prompts (every rollout of a group in its first round; episodes whose
          histories agree) are run once, and their rows copied from it.
        - A prefix of at least `MIN_SHARED_PREFIX` tokens common to all of them (the system
          prompt) is run once, in a batch-1 pass; with `cascade` (where `cascade_supported`)
          its cache is kept once and attended to by cascade attention, else it is repeated
          over the rows.
        - The rest runs in chunks of about `PREFILL_CHUNK_TOKENS` (prompts of similar length
          together, so little padding), copied into the batch right-aligned.

        Each row is [shared prefix][hole][its prompt's rest], the hole masked out and the
        position ids counting real tokens, so it sees exactly its own prompt. `reserve`: tokens
        of cache room to keep for the decoding steps; `pool`: where cache buffers come from."""
        n = len(prompts)
        device = model_device(model)
        cache = new_cache(model, reserve=reserve, pool=pool)
        if cache is None:  # the model's own cache: one flat pass
            input_ids, mask, positions = left_pad(prompts, pad_id, device)
            batch = cls(model, None, mask, positions[:, -1])
            batch.forward(input_ids, positions)
            return batch
        copies: dict[tuple[int, ...], list[int]] = {}
        for i, prompt in enumerate(prompts):
            copies.setdefault(tuple(prompt), []).append(i)
        distinct = sorted(copies, key=len)
        shared = shared_prefix_length(distinct) if share_prefix and len(distinct) > 1 else 0
        if shared < MIN_SHARED_PREFIX:
            shared = 0
        root = cls(model, cache, torch.ones((1, shared), dtype=torch.long, device=device),
                   torch.full((1,), -1, dtype=torch.long, device=device))
        if shared:
            root.forward(torch.tensor([list(distinct[0][:shared])], device=device),
                         torch.arange(shared, device=device)[None, :])
            if cascade and cascade_supported(model):
                # The prefix's cache stays a batch of one; the rows' cache holds the rest.
                root.prefix = [(layer.keys.clone(), layer.values.clone())
                               for layer in cache.layers]
                root.cache = new_cache(model, reserve=reserve, pool=pool)
                root.mask = root.mask[:, :0]
        width = root.mask.shape[1] + len(distinct[-1]) - shared
        final: BatchState | None = None
        start = 0
        while start < len(distinct):
            # Sorted by length, so the chunk's last prompt is its longest.
            stop = start + 1
            while (stop < len(distinct)
                   and (stop + 1 - start) * (len(distinct[stop]) - shared) <= PREFILL_CHUNK_TOKENS):
                stop += 1
            chunk = distinct[start:stop]
            batch = root.fork(len(chunk))
            input_ids, mask, positions = left_pad([p[shared:] for p in chunk], pad_id, device)
            batch.mask = torch.cat([batch.mask, mask], dim=1)
            batch.forward(input_ids, positions + shared)
            if final is None:
                final = batch.empty_like(rows=n, width=width)
            rows = [k for k, p in enumerate(chunk) for _ in copies[p]]
            final.put(batch, rows, [i for p in chunk for i in copies[p]])
            batch.release()
            start = stop
        assert final is not None
        return final

    def empty_like(self, rows: int, width: int) -> BatchState:
        """A batch of `rows` rows whose caches and masks are `width` tokens wide and empty
        (finite filler, masked out), with this batch's model, cache room and shared prefix;
        `put` fills it."""
        like_layer = self.cache.layers[0]
        cache = new_cache(self.model, reserve=like_layer.reserve, pool=like_layer.pool)
        for layer, like in zip(cache.layers, self.cache.layers, strict=True):
            if like.is_initialized:
                layer.empty_rows(rows, width, like.keys)
        batch = BatchState(self.model, cache, self.mask.new_zeros((rows, width)),
                           self.last_position.new_zeros(rows), prefix=self.prefix)
        if self.logits.numel():
            batch.logits = self.logits.new_zeros((rows, self.logits.shape[1]))
        return batch

    def put(self, source: BatchState, rows: Sequence[int], targets: Sequence[int]) -> None:
        """Copy `source`'s rows into this batch's rows `targets`, right-aligned (the left part
        of a narrower row stays masked out)."""
        src = torch.tensor(list(rows), dtype=torch.long, device=self.mask.device)
        dst = torch.tensor(list(targets), dtype=torch.long, device=self.mask.device)
        for layer, from_layer in zip(self.cache.layers, source.cache.layers, strict=True):
            if from_layer.is_initialized:
                layer.put_rows(from_layer, src, dst)
        self.mask[dst, self.mask.shape[1] - source.mask.shape[1]:] = source.mask[src]
        self.last_position[dst] = source.last_position[src]
        if source.logits.numel():
            self.logits[dst] = source.logits[src]

    def release(self) -> None:
        """Give the cache's buffers back to their pool; the batch is unusable after."""
        if self.cache is not None:
            for layer in self.cache.layers:
                if isinstance(layer, GrowingKVLayer):
                    layer.release()

    def fork(self, rows: int) -> BatchState:
        """A new batch of `rows` copies of this one-row batch."""
        batch = self.empty_like(rows, self.mask.shape[1])
        batch.put(self, [0] * rows, list(range(rows)))
        return batch

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows, in this order (a row listed twice is copied)."""
        if self.cache is not None:
            self.cache.reorder_cache(rows)
        self.mask, self.last_position = self.mask[rows], self.last_position[rows]
        if self.logits.numel():
            self.logits = self.logits[rows]

    def step(self, tokens: torch.Tensor) -> None:
        """Append one token to every row and compute the next logits."""
        ones = torch.ones((self.mask.shape[0], 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        self.forward(tokens[:, None].to(self.mask.device), self.last_position[:, None] + 1)


@torch.no_grad()
def sample_batch(model: Any, prompts: Sequence[Sequence[int]], *, temperature: float,
                 top_p: float, max_new_tokens: int, pad_id: int, watcher: RowWatcher,
                 generator: RowGenerators = None, share_prefix: bool = True,
                 cascade: bool = True,
                 pool: BufferPool | None = None) -> list[tuple[list[int], list[float]]]:
    """Sample a completion for every prompt, in one batched decoding loop.

    Returns, per prompt, the generated token ids (up to the token at which `watcher` said the
    row was done, or `max_new_tokens`) and their log-probabilities under
    log_softmax(logits / T), T = `temperature` (1 when it is 0, greedy). `top_p` changes what
    can be drawn, not the recorded log-probabilities. `generator`: one for the whole batch, or
    one per prompt, so that a prompt's tokens depend on its own stream only (`RowGenerators`):
    a row draws once per token it generates, wherever compaction puts it in the batch.
    """
    n = len(prompts)
    if n == 0:
        return []
    logprob_temperature = temperature if temperature > 0 else 1.0
    tokens: list[list[int]] = [[] for _ in range(n)]
    logprobs: list[list[float]] = [[] for _ in range(n)]
    batch = BatchState.prefill(model, prompts, pad_id=pad_id,
                               reserve=min(max_new_tokens, DECODE_RESERVE),
                               share_prefix=share_prefix, cascade=cascade, pool=pool)
    rows = list(range(n))  # rows[k]: the prompt of batch row k
    finished: set[int] = set()
    per_prompt = None if generator is None or isinstance(generator, torch.Generator) else list(
        generator)
    if per_prompt is not None and len(per_prompt) != n:
        raise ValueError(f"{len(per_prompt)} generators for {n} prompts")
    for step in range(max_new_tokens):
        # Per prompt: the rows still in the batch but finished draw nothing.
        step_generator: RowGenerators = generator if per_prompt is None else [
            None if r in finished else per_prompt[r] for r in rows]
        drawn = draw_tokens(batch.logits, temperature, top_p, step_generator)
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
    batch.release()
    return list(zip(tokens, logprobs, strict=True))


@torch.no_grad()
def choose_tokens(model: Any, prompts: Sequence[Sequence[int]], chooser: TokenChooser, *,
                  pad_id: int, reserve: int) -> None:
    """Continue the prompts, one token per row at a time, as `chooser` chooses from each
    step's logits, until it is finished: one prefill (shared prefix and identical prompts
    computed once), then a cached decoding step per token (`reserve`: tokens of cache room)."""
    batch = BatchState.prefill(model, prompts, pad_id=pad_id, reserve=reserve)
    while not chooser.finished:
        tokens = chooser.choose(batch.logits)
        if chooser.finished:
            break
        batch.step(tokens)
    batch.release()


class _RunToEnd:
    """A row watcher that lets every row run to `max_new_tokens`."""

    def update(self, rows: Sequence[int], tokens: Sequence[int]) -> list[bool]:
        return [False] * len(rows)


def unsupported(model: Any) -> str | None:
    """Why `sample_batch` cannot sample from `model`, or None where it can.

    The check is a run: two greedy tokens for two prompts of different lengths that share a
    `MIN_SHARED_PREFIX`-token prefix, which takes every path a real batch takes (the shared
    prefix's pass, cascade attention where `cascade_supported`, left padding, the growing cache
    or the model's own, a cached decoding step). What breaks there (an architecture the engine
    was not written for, a `transformers` that renamed an argument) would break every step."""
    config = getattr(model, "config", None)
    if config is None:
        return "the model has no config"
    if getattr(config, "is_encoder_decoder", False):
        return "the model is an encoder-decoder"
    prompts = [[0] * (MIN_SHARED_PREFIX + 2), [0] * (MIN_SHARED_PREFIX + 1)]
    try:
        sample_batch(model, prompts, temperature=0, top_p=1.0, max_new_tokens=2, pad_id=0,
                     watcher=_RunToEnd())
    except Exception as err:  # any failure here means: use the plain engine instead
        return f"{type(err).__name__}: {err}"
    return None
