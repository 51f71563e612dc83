"""What the tests compare LM sampling against: the trainer's log-probability convention
computed the plainest way (one unpadded forward, log_softmax(logits / T))."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def forward_logprobs(model: Any, prompt: Sequence[int], completion: Sequence[int],
                     temperature: float) -> list[float]:
    """Per-token log-probabilities of `completion` after `prompt`: one unpadded forward."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[*prompt, *completion]])).logits[0].float()
    lp = torch.log_softmax(logits / temperature, dim=-1)
    return [float(lp[len(prompt) - 1 + k, t]) for k, t in enumerate(completion)]
