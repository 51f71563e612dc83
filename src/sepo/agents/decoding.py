"""What both sampling engines implement: the switch's names and the two decoding interfaces.

The agent samples with one of two engines, chosen by `SamplingConfig.engine`:

- `"fast"`: sepo's own batched decoding loop on `transformers`' internals (`sepo.agents.fast`);
- `"generate"`: `transformers`' public `generate` (`sepo.agents.plain`).

Both sample with a `RowWatcher` that ends each row's completion, and both continue prompts
token by token as a `TokenChooser` (the constrained fallback) chooses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

# The switch's values live with the bounds, where the configs check them without torch.
from sepo.limits import ENGINES as ENGINES
from sepo.limits import Engine as Engine


class RowWatcher(Protocol):
    """Decides, token by token, when each row's completion is over."""

    def update(self, rows: Sequence[int], tokens: Sequence[int]) -> list[bool]:
        """Append `tokens[k]` to row `rows[k]`'s completion; whether each row is now done."""
        ...


class TokenChooser(Protocol):
    """Chooses every row's next token from its logits, until each row is done (the
    constrained fallback's walk of its action tries)."""

    @property
    def finished(self) -> bool:
        """Whether every row is done."""
        ...

    #: Whether each row is done.
    done: list[bool]

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """Each row's next token (padding for a row already done), from the next-token logits
        (batch × vocabulary, float32)."""
        ...


#: Where a sampling step's randomness comes from: one generator for the whole batch (the draws
#: of a row then depend on which rows share its batch), or one per row (`row_generators`), None
#: for a row that draws nothing this step (a finished row still in the batch).
RowGenerators = torch.Generator | Sequence[torch.Generator | None] | None


def row_generators(seeds: Sequence[int], device: torch.device) -> list[torch.Generator]:
    """One generator per row, on `device`, each seeded with its row's seed."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def draw_categorical(probs: torch.Tensor, generator: RowGenerators) -> torch.Tensor:
    """One index per row of `probs` (rows of non-negative weights, not necessarily summing to
    1), drawn in proportion to the weights: the index of the largest weight ÷ Exp(1) variate
    (the exponential race). That is how `torch.multinomial(probs, 1)` draws, and on CPU these
    are its draws, bit for bit, from the same generator (tests/test_sampling_cache.py), so
    sampled play is the play of the runs docs/RESULTS.md reports.

    Why not `torch.multinomial` itself: it makes its variates with a serial `exponential_`,
    6 ms per decoding step of 256 rows of `tiny`; the same variates made vectorised, from one
    float64 uniform per entry, take 2.6 ms. (Inverting the cumulative sum at one uniform per
    row took 0.6 ms, but its draws differ from the documented runs', so every sampled result
    moved; it was used from 9e6cc9e to 11195b8.) Off the CPU, `torch.multinomial` itself
    runs: its GPU kernels make other variates, and the GPU runs of docs/GPU.md used it.

    With one generator per row (a sequence), row k's uniforms come from `generator[k]` alone,
    on any device: its draw depends on its own weights and stream, not on the other rows."""
    per_row = generator is not None and not isinstance(generator, torch.Generator)
    if probs.device.type != "cpu" and not per_row:
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # type: ignore[arg-type]
    uniform = torch.empty(probs.shape, dtype=torch.float64, device=probs.device)
    if per_row:
        rows: Sequence[torch.Generator | None] = generator  # type: ignore[assignment]
        if len(rows) != probs.shape[0]:
            raise ValueError(f"{len(rows)} generators for {probs.shape[0]} rows")
        for k, row_generator in enumerate(rows):
            if row_generator is None:
                uniform[k].fill_(0.5)  # draws nothing: its stream is left where it was
            else:
                uniform[k].uniform_(generator=row_generator)
    else:
        uniform.uniform_(generator=generator)  # type: ignore[arg-type]
    # −log1p(−u) in float64, then rounded: exactly torch's CPU `exponential_` for float32.
    exponential = torch.log1p(uniform.neg_()).neg_().to(probs.dtype)
    # u = 0 (probability 2⁻⁵³ an entry) would make 0/0 for a zero weight: keep it finite.
    return (probs / exponential.clamp_min_(torch.finfo(probs.dtype).tiny)).argmax(dim=-1)


def draw_tokens(logits: torch.Tensor, temperature: float, top_p: float,
                generator: RowGenerators) -> torch.Tensor:
    """One token per row: the argmax when `temperature` is 0, else a draw from the
    temperature-scaled softmax restricted to the top-p nucleus (the smallest set of most
    probable tokens whose mass reaches `top_p`; the most probable token always stays)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    # A broken model's NaN logits must not stop a run: they become very unlikely tokens.
    logits = torch.nan_to_num(logits, nan=-1e4, posinf=1e4, neginf=-1e4)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p >= 1.0:
        return draw_categorical(probs, generator)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    return order.gather(1, draw_categorical(sorted_probs, generator)[:, None]).squeeze(1)
