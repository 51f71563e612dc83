"""Upper bounds of the numbers a user gives, and the sampling engines' names, checked before
any work starts.

Each bound is far above any real run; past it a typo (an extra zero, 10**23) would run for
months or allocate memory until the machine kills the process. They live in this module of
constants, below every layer, because the CLI's options, the configs and the LM agent all check
them, and the configs must not import the agent (and torch) to do so.
"""

from __future__ import annotations

from typing import Literal

#: The LM agent's sampling engines (`sepo.agents.decoding`), the default first.
Engine = Literal["fast", "generate"]
ENGINES: tuple[Engine, ...] = ("fast", "generate")

#: Seeds: SFT seeds numpy's legacy generator (transformers' `set_seed`), which takes 32 bits.
MAX_SEED = 2**32 - 1
#: Optimiser steps, and anything counted in them: a million SEPO steps is months of compute.
MAX_STEPS = 1_000_000
#: Episodes per opponent (an evaluation, SFT data): every episode is kept in memory, about
#: 15 KB each for IPD, so 10,000 against each of a game's ~10 opponents is ~1.5 GB.
MAX_EPISODES = 10_000
#: Bootstrap resamples: intervals stop changing long before 100,000.
MAX_BOOTSTRAP = 100_000
#: Generated tokens per decision: each row of a batch holds a key/value cache of prompt + this,
#: and an answer is one sentence and an action.
MAX_NEW_TOKENS = 4096
#: Evaluation seed indices per evaluation: each is a full pass over every opponent.
MAX_EVAL_SEEDS = 1000
#: The bootstrap draws an (resamples × episodes) matrix per opponent and holds a few float64
#: copies of it at once: 10^8 entries is about 3 GB at the peak.
MAX_BOOTSTRAP_DRAWS = 10**8
#: Rollouts per opponent group: a step plays every group at once.
MAX_GROUP_SIZE = 256
#: Learning rates: AdamW moves every weight by about lr per step, so 1 already destroys a model.
MAX_LR = 1.0
