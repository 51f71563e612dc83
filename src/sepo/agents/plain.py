"""The plain engine: sampling and the constrained fallback's decoding with `transformers`' public
`generate`. It touches no `transformers` internals, so it keeps working where the fast engine
(`sepo.agents.fast`) cannot; it is slower on the CPU (finished rows stay in the batch, the
shared system prompt runs once per row).

`generate_batch` samples every prompt's completion in batched `generate` calls (left padding,
`do_sample` with the temperature and top-p, greedy at temperature 0) and records each token's
log-probability in the trainer's convention (`sepo.agents.lm`), from the unprocessed logits
`generate` returns (`output_logits`). Its draws come from the global torch generator, which
`generate` uses: it is seeded with the call's seed inside `torch.random.fork_rng`, so the same
seed gives the same play and the caller's generator is left as it was. Greedy play is the fast
engine's, token for token, and the log-probabilities agree up to float rounding
(tests/test_engines.py); sampled play follows the same distribution with other draws.

`choose_tokens` runs the constrained fallback's walk (`sepo.agents.fallback.TrieWalk`) as a
greedy `generate` whose logits processor puts all the weight on the token the walk chooses
from the step's logits: the same choices, from the same logits and generator, as on the fast
engine.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from sepo.agents.chat import left_pad, model_device
from sepo.agents.decoding import RowWatcher, TokenChooser, draw_tokens, row_generators

#: Bytes of raw logits one `generate` call may hold (`output_logits` keeps every step's, for
#: every row): the batch is split into calls that stay under it.
GENERATE_LOGITS_BYTES = 1 << 30

#: Generation settings that change which token is drawn, at the values that change nothing.
#: `generate` fills every setting left unset from the model's own generation config, so
#: without these a checkpoint's repetition penalty or top-k would slip into the policy. (A
#: `min_new_tokens` of 0 overrides any `min_length`.)
NEUTRAL_SETTINGS: dict[str, Any] = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "min_new_tokens": 0, "guidance_scale": 1.0,
    "num_beams": 1, "num_return_sequences": 1, "renormalize_logits": False,
    "remove_invalid_values": False,
}
#: The same for the settings only sampling reads (`generate` warns about them when greedy).
NEUTRAL_SAMPLING_SETTINGS: dict[str, Any] = {
    "top_k": 0, "min_p": 0.0, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
}

#: Settings with no neutral value: where the model's generation config sets one, `generate`
#: applies it, and the recorded log-probabilities are no longer the sampling distribution's.
UNNEUTRAL_SETTINGS = ("bad_words_ids", "suppress_tokens", "begin_suppress_tokens",
                      "forced_bos_token_id", "forced_eos_token_id", "sequence_bias", "top_h",
                      "exponential_decay_length_penalty", "watermarking_config", "stop_strings")


def generation_config(*, temperature: float, top_p: float, max_new_tokens: int, pad_id: int,
                      eos_ids: Sequence[int]) -> GenerationConfig:
    """The `generate` settings of the policy: temperature and top-p only (greedy at
    temperature 0), every other sampling setting neutral, unprocessed logits returned."""
    sampling = ({"temperature": float(temperature), "top_p": float(top_p),
                 **NEUTRAL_SAMPLING_SETTINGS} if temperature > 0 else {})
    return GenerationConfig(
        do_sample=temperature > 0, max_new_tokens=max_new_tokens, pad_token_id=pad_id,
        eos_token_id=list(eos_ids) or None, return_dict_in_generate=True, output_logits=True,
        use_cache=True, **NEUTRAL_SETTINGS, **sampling)


def _warn_unneutral(model: Any) -> None:
    own = getattr(model, "generation_config", None)
    kept = [name for name in UNNEUTRAL_SETTINGS if getattr(own, name, None) is not None]
    if kept:
        warnings.warn(f"the model's generation config sets {', '.join(kept)}, which generate "
                      "applies while sampling: the recorded log-probabilities are not those of "
                      "the distribution sampled from", RuntimeWarning, stacklevel=3)


class FiniteLogits(LogitsProcessor):
    """NaN and infinite logits become very unlikely (or very likely) finite ones before the
    draw, as in the fast engine: a broken model's NaN must not stop a run."""

    def __call__(self, input_ids: torch.LongTensor,
                 scores: torch.FloatTensor) -> torch.FloatTensor:
        return torch.nan_to_num(scores, nan=-1e4, posinf=1e4, neginf=-1e4)


class WatchedRows(StoppingCriteria):
    """Stops each row of one `generate` call where `watcher` says its completion is over, or at
    `max_new_tokens`, and keeps the tokens each row drew up to there.

    `generate` calls it after every drawn token, with the batch's ids so far; a row already
    over is fed padding, which is neither recorded nor shown to the watcher. `rows[k]` is the
    watcher's index of the call's row k."""

    def __init__(self, watcher: RowWatcher, rows: Sequence[int], max_new_tokens: int) -> None:
        self.watcher = watcher
        self.rows = list(rows)
        self.max_new_tokens = max_new_tokens
        self.tokens: list[list[int]] = [[] for _ in self.rows]
        self.done = [False] * len(self.rows)

    def __call__(self, input_ids: torch.LongTensor, scores: Any,
                 **kwargs: Any) -> torch.BoolTensor:
        live = [k for k, done in enumerate(self.done) if not done]
        if live:
            drawn = input_ids[:, -1].tolist()
            for k in live:
                self.tokens[k].append(drawn[k])
            over = self.watcher.update([self.rows[k] for k in live], [drawn[k] for k in live])
            for k, ended in zip(live, over, strict=True):
                self.done[k] = ended or len(self.tokens[k]) >= self.max_new_tokens
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


@contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """While inside, the global generators of the CPU and of `device` (a CUDA device) start
    from `seed`; on exit they are as they were."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def _vocabulary_size(model: Any) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    size = getattr(text, "vocab_size", None)
    return int(size) if isinstance(size, int) and size > 0 else None


@torch.no_grad()
def generate_batch(model: Any, prompts: Sequence[Sequence[int]], *, temperature: float,
                   top_p: float, max_new_tokens: int, pad_id: int, eos_ids: Sequence[int],
                   watcher: RowWatcher, seed: int,
                   row_seeds: Sequence[int] | None = None) -> list[tuple[list[int], list[float]]]:
    """Sample a completion for every prompt with `model.generate`.

    Returns, per prompt, the generated token ids (up to the token at which `watcher` said the
    row was done, or `max_new_tokens`) and their log-probabilities under
    log_softmax(logits / T), T = `temperature` (1 when it is 0, greedy), over the whole
    vocabulary: the same as `sepo.agents.fast.sample_batch`'s.

    With `row_seeds`, prompt i draws from a generator of its own (`RowDraws`), as the fast
    engine does with per-prompt generators: the same draws from the same logits."""
    n = len(prompts)
    if n == 0:
        return []
    _warn_unneutral(model)
    device = model_device(model)
    keyed = row_seeds is not None and temperature > 0
    # Keyed rows are drawn by `RowDraws`; `generate` itself then only takes its choice.
    config = generation_config(temperature=0 if keyed else temperature, top_p=top_p,
                               max_new_tokens=max_new_tokens, pad_id=pad_id, eos_ids=eos_ids)
    generators = row_generators(row_seeds, device) if keyed and row_seeds is not None else None
    logprob_temperature = temperature if temperature > 0 else 1.0
    vocabulary = _vocabulary_size(model)
    per_call = n if vocabulary is None else max(
        1, GENERATE_LOGITS_BYTES // (4 * vocabulary * max_new_tokens))
    results: list[tuple[list[int], list[float]]] = []
    with seeded_global_rng(seed, device):
        for start in range(0, n, per_call):
            rows = list(range(start, min(n, start + per_call)))
            input_ids, mask, _ = left_pad([prompts[i] for i in rows], pad_id, device)
            stop = WatchedRows(watcher, rows, max_new_tokens)
            processors = LogitsProcessorList(
                [RowDraws([generators[i] for i in rows], stop, temperature, top_p)]
                if generators is not None else [FiniteLogits()] if temperature > 0 else [])
            out = model.generate(input_ids=input_ids, attention_mask=mask,
                                 generation_config=config, logits_processor=processors,
                                 stopping_criteria=StoppingCriteriaList([stop]))
            longest = max(len(tokens) for tokens in stop.tokens)
            drawn = torch.tensor([tokens + [pad_id] * (longest - len(tokens))
                                  for tokens in stop.tokens], device=device)
            logits = torch.stack([step.float() for step in out.logits[:longest]], dim=1)
            logprobs = torch.log_softmax(logits / logprob_temperature, dim=-1).gather(
                2, drawn[:, :, None]).squeeze(2).tolist()
            results.extend((tokens, lp[:len(tokens)])
                           for tokens, lp in zip(stop.tokens, logprobs, strict=True))
    return results


class RowDraws(LogitsProcessor):
    """Draws every live row's next token from the row's own generator (`draw_tokens`, the fast
    engine's draw) and leaves only that token to `generate`'s greedy step. A row `stop` has
    ended draws nothing (`generate` feeds it padding), so each row's stream advances once per
    token it generates, whichever rows share its call."""

    def __init__(self, generators: Sequence[torch.Generator], stop: WatchedRows,
                 temperature: float, top_p: float) -> None:
        self.generators = list(generators)
        self.stop = stop
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.LongTensor,
                 scores: torch.FloatTensor) -> torch.FloatTensor:
        live: list[torch.Generator | None] = [
            None if done else g for g, done in zip(self.generators, self.stop.done, strict=True)]
        tokens = draw_tokens(scores.float(), self.temperature, self.top_p, live)
        return torch.full_like(scores, -math.inf).scatter_(1, tokens[:, None], 0.0)


class ChosenTokens(LogitsProcessor):
    """Makes `generate`'s greedy step take the token `chooser` chooses from the step's logits,
    for every row (padding for a row the chooser is done with)."""

    def __init__(self, chooser: TokenChooser) -> None:
        self.chooser = chooser

    def __call__(self, input_ids: torch.LongTensor,
                 scores: torch.FloatTensor) -> torch.FloatTensor:
        tokens = self.chooser.choose(scores).to(scores.device)
        return torch.full_like(scores, -math.inf).scatter_(1, tokens[:, None], 0.0)


class ChooserFinished(StoppingCriteria):
    """Stops each row of a `generate` call when `chooser` is done with it."""

    def __init__(self, chooser: TokenChooser) -> None:
        self.chooser = chooser

    def __call__(self, input_ids: torch.LongTensor, scores: Any,
                 **kwargs: Any) -> torch.BoolTensor:
        return torch.tensor(self.chooser.done, dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def choose_tokens(model: Any, prompts: Sequence[Sequence[int]], chooser: TokenChooser, *,
                  pad_id: int, eos_ids: Sequence[int], max_new_tokens: int) -> None:
    """Continue the prompts with `model.generate`, one token per row at a time, as `chooser`
    chooses from each step's logits (which, with every other processor neutral, are the
    model's own), until it is finished or `max_new_tokens` are written."""
    _warn_unneutral(model)
    input_ids, mask, _ = left_pad(prompts, pad_id, model_device(model))
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens,
                              pad_token_id=pad_id, eos_token_id=list(eos_ids) or None,
                              use_cache=True, **NEUTRAL_SETTINGS)
    model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config,
                   logits_processor=LogitsProcessorList([ChosenTokens(chooser)]),
                   stopping_criteria=StoppingCriteriaList([ChooserFinished(chooser)]))
