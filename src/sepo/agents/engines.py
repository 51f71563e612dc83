"""The switch between the two sampling engines (`SamplingConfig.engine`), in one place.

`resolve` says which engine runs a model: the one asked for, except that `"fast"` falls back
to `"generate"`, with a warning, where the fast engine cannot be imported (a `transformers`
whose internals it no longer finds) or cannot run the model (`sepo.agents.fast.unsupported`).
`sample` and `choose_tokens` then run the rollout sampling and the constrained fallback's
decoding on that engine. The `"generate"` engine never imports `sepo.agents.fast`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch

from sepo.agents import plain
from sepo.agents.chat import model_device
from sepo.agents.decoding import (
    Engine,
    RowGenerators,
    RowWatcher,
    TokenChooser,
    row_generators,
)


def import_fast() -> tuple[ModuleType | None, str | None]:
    """The fast engine's package, or None and why it cannot be imported."""
    try:
        from sepo.agents import fast
    except Exception as err:  # any failure to import it means: use the plain engine
        return None, f"it cannot be imported ({type(err).__name__}: {err})"
    return fast, None


def fast_or_none(purpose: str) -> ModuleType | None:
    """The fast engine's package for `purpose` (e.g. the loss's shared prompt prefix), or None,
    with a warning, where it cannot be imported."""
    fast, problem = import_fast()
    if fast is None:
        warnings.warn(f"the fast engine is unavailable for {purpose}: {problem}; using plain "
                      "forward passes", RuntimeWarning, stacklevel=2)
    return fast


def resolve(engine: Engine, model: Any) -> Engine:
    """The engine that will sample from `model`: `engine`, or `"generate"` where `"fast"` was
    asked for and cannot run it (warned, with the reason)."""
    if engine == "generate":
        return engine
    fast, problem = import_fast()
    if fast is not None:
        problem = fast.unsupported(model)
    if problem is None:
        return "fast"
    warnings.warn(f"the fast sampling engine cannot run this model ({problem}); sampling with "
                  "transformers' generate instead (engine 'generate')", RuntimeWarning,
                  stacklevel=2)
    return "generate"


def buffer_pool(engine: Engine, model: Any) -> Any | None:
    """Cache buffers for an agent to reuse from one engine step to the next: the fast engine's
    on CPU, where a fresh large buffer costs its page faults (CUDA's caching allocator does
    this already, and `generate` manages its own cache); else None."""
    if engine != "fast" or model_device(model).type != "cpu":
        return None
    from sepo.agents.fast import BufferPool

    return BufferPool()


def sample(engine: Engine, model: Any, prompts: Sequence[Sequence[int]], *, temperature: float,
           top_p: float, max_new_tokens: int, pad_id: int, eos_ids: Sequence[int],
           watcher: RowWatcher, seed: int, row_seeds: Sequence[int] | None = None,
           pool: Any | None = None) -> list[tuple[list[int], list[float]]]:
    """A completion for every prompt and its log-probabilities (the trainer's convention), on
    `engine`, seeded with `seed` (`pool`: the fast engine's buffers). With `row_seeds` (one
    per prompt), prompt i draws from a stream of its own seeded with `row_seeds[i]` and
    `seed` is unused: on either engine, its completion depends on its own logits and seed, not
    on the batch it shares (`sepo.agents.decoding.draw_tokens`)."""
    if row_seeds is not None and len(row_seeds) != len(prompts):
        raise ValueError(f"{len(row_seeds)} row seeds for {len(prompts)} prompts")
    if engine == "fast":
        from sepo.agents.fast import sample_batch

        device = model_device(model)
        generator: RowGenerators = (torch.Generator(device=device).manual_seed(seed)
                                    if row_seeds is None else row_generators(row_seeds, device))
        return sample_batch(model, prompts, temperature=temperature, top_p=top_p,
                            max_new_tokens=max_new_tokens, pad_id=pad_id, watcher=watcher,
                            generator=generator, pool=pool)
    return plain.generate_batch(model, prompts, temperature=temperature, top_p=top_p,
                                max_new_tokens=max_new_tokens, pad_id=pad_id, eos_ids=eos_ids,
                                watcher=watcher, seed=seed, row_seeds=row_seeds)


def choose_tokens(engine: Engine, model: Any, prompts: Sequence[Sequence[int]],
                  chooser: TokenChooser, *, pad_id: int, eos_ids: Sequence[int],
                  max_new_tokens: int) -> None:
    """Continue the prompts through `model` on `engine`, one token per row at a time, as
    `chooser` chooses from each step's logits, until it is finished (at most `max_new_tokens`
    tokens; `eos_ids` end a row on the plain engine)."""
    if engine == "fast":
        from sepo.agents.fast import choose_tokens as fast_choose_tokens

        fast_choose_tokens(model, prompts, chooser, pad_id=pad_id, reserve=max_new_tokens)
        return
    plain.choose_tokens(model, prompts, chooser, pad_id=pad_id, eos_ids=eos_ids,
                        max_new_tokens=max_new_tokens)
