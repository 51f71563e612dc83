"""A game's stage budgets: the `[budget]` table of `<game>.toml`.

How much work `sepo run` gives each stage of one game per training seed (SFT data and epochs,
SEPO steps, checkpoint period, final evaluation), whether the agent writes a reason before its
action, and the stage-2 learning rate on a `tiny` base. They are data beside the game's λ, β
and lr, because each was sized on that game (docs/RESULTS.md times them). A game whose toml has
no `[budget]` (a plugin, until it is timed) gets `GENERIC_BUDGET`; a partial table takes the
keys it lacks from it. Each `sepo run` option of the same meaning overrides its key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sepo.errors import SepoError, UnknownNameError
from sepo.limits import MAX_EPISODES, MAX_LR, MAX_STEPS

#: SFT epochs above this are a typo: 1,000 epochs is already pure memorisation (as
#: `RunConfig.sft_epochs` and `SFTRunConfig.epochs`).
_MAX_SFT_EPOCHS = 1000


def _describe(text: str) -> dict[str, str]:
    return {"description": text}


@dataclass(frozen=True, slots=True)
class GameBudget:
    """How much work each stage of one game gets per training seed, and `tiny`'s stage-2 rate.

    Validated on creation: a wrong type or a value out of bounds is a `SepoError` naming the
    key."""

    sft_episodes: int = field(metadata=_describe("SFT demonstrator episodes per SFT opponent"))
    sft_epochs: float = field(metadata=_describe("SFT epochs"))
    sepo_steps: int = field(metadata=_describe("SEPO (and reward-only) steps"))
    checkpoint_every: int = field(metadata=_describe("in-training evaluation + checkpoint "
                                                     "period"))
    eval_episodes: int = field(metadata=_describe("final evaluation episodes per opponent"))
    reasoning: bool = field(metadata=_describe("a short thought before the action (SFT, "
                                               "training, evaluation)"))
    tiny_lr: float = field(metadata=_describe("stage-2 learning rate of `sepo run` on a `tiny` "
                                              "base, unless `--sepo lr=...` is given (the "
                                              "`[sepo]` lr is the paper's, for LoRA on a 4B "
                                              "model)"))

    def __post_init__(self) -> None:
        for name, low, high in (("sft_episodes", 1, MAX_EPISODES), ("sepo_steps", 1, MAX_STEPS),
                                ("checkpoint_every", 1, MAX_STEPS),
                                ("eval_episodes", 1, MAX_EPISODES)):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool)
                    and low <= value <= high):
                raise SepoError(f"budget {name} must be an integer from {low} to {high:,} "
                                f"(got {value!r})")
        for name, high in (("sft_epochs", _MAX_SFT_EPOCHS), ("tiny_lr", MAX_LR)):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and not isinstance(value, bool)
                    and math.isfinite(value) and 0 < value <= high):
                raise SepoError(f"budget {name} must be a number > 0 and ≤ {high:g} "
                                f"(got {value!r})")
            object.__setattr__(self, name, float(value))  # a toml `2` is the float 2.0
        if not isinstance(self.reasoning, bool):
            raise SepoError(f"budget reasoning must be true or false (got {self.reasoning!r})")

    @classmethod
    def table_keys(cls) -> tuple[str, ...]:
        """The keys of a `[budget]` table, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def description(cls, key: str) -> str:
        """What `key` means, for docs/configuration.md."""
        return str(cls.__dataclass_fields__[key].metadata["description"])

    def replace(self, **changes: Any) -> GameBudget:
        """This budget with `changes` (validated again)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], source: str,
                   base: GameBudget | None = None) -> GameBudget:
        """The budget of a `[budget]` table read from `source` (e.g. "ipd.toml"): its keys over
        `base` (`GENERIC_BUDGET` by default). An unknown key is an `UnknownNameError` listing the
        keys; a bad value a `SepoError` naming the file and the key."""
        for key in table:
            if key not in cls.table_keys():
                raise UnknownNameError(f"{source} [budget] key", key, cls.table_keys())
        try:
            return (base or GENERIC_BUDGET).replace(**table)
        except SepoError as err:
            raise SepoError(f"{source} [budget]: {err}") from None


#: The budget of a game whose toml has no `[budget]` (a plugin game): the settings auction and
#: negotiation share, a middle ground never timed on that game; set `[budget]` (or the run
#: options, `--steps`, `--sft-episodes`, ...) once it is. `tiny_lr` is the rate of the games
#: that act without a long reason (docs/DESIGN.md, "Stage-2 learning rates on `tiny`").
GENERIC_BUDGET = GameBudget(sft_episodes=40, sft_epochs=2.0, sepo_steps=10, checkpoint_every=5,
                            eval_episodes=30, reasoning=True, tiny_lr=1e-4)


__all__ = ["GENERIC_BUDGET", "GameBudget"]
