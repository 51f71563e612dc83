"""Language-model agents: `LMAgent` plays any game as a `Player` with one batched generation per
engine step, parses with the game's parser, falls back to constrained decoding, and returns the
training trace of every decision (`LMTrace`).

The generation runs on one of two engines, chosen by `SamplingConfig.engine` (`ENGINES`):
the fast CPU engine of `sepo.agents.fast`, the only code on `transformers` internals, or
`transformers`' plain `generate` (`sepo.agents.plain`); `sepo.agents.engines` switches.
"""

from sepo.agents.chat import Prompt, build_prompt
from sepo.agents.decoding import ENGINES, Engine
from sepo.agents.fallback import ActionTrie, ConstrainedChoice, constrained_decode
from sepo.agents.lm import (
    LMAgent,
    LMTrace,
    SamplingConfig,
    fallback_messages,
    load_lm_agent,
)

__all__ = [
    "ENGINES",
    "ActionTrie",
    "ConstrainedChoice",
    "Engine",
    "LMAgent",
    "LMTrace",
    "Prompt",
    "SamplingConfig",
    "build_prompt",
    "constrained_decode",
    "fallback_messages",
    "load_lm_agent",
]
