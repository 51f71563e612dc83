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
