"""`RunConfig`: everything that defines a `sepo run`, and the settings each stage derives from it.

A budget field left as None takes the game's entry of `DEFAULT_BUDGETS`; `sepo` and `sft` pass
further `SEPOConfig` / `SFTRunConfig` fields through to both trained conditions. Every check
that can fail runs when the config is built, not an hour into the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sepo.config_model import StrictModel, check_field
from sepo.errors import SepoError, UnknownNameError
from sepo.games import game_names, get_game
from sepo.limits import (
    MAX_BOOTSTRAP,
    MAX_BOOTSTRAP_DRAWS,
    MAX_EPISODES,
    MAX_EVAL_SEEDS,
    MAX_GROUP_SIZE,
    MAX_NEW_TOKENS,
    MAX_SEED,
    MAX_STEPS,
)


class GameBudget(BaseModel):
    """How much work each stage of one game gets (per training seed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sft_episodes: int = Field(ge=1, description="SFT demonstrator episodes per SFT opponent")
    sft_epochs: float = Field(gt=0, description="SFT epochs")
    sepo_steps: int = Field(ge=1, description="SEPO (and reward-only) steps")
    checkpoint_every: int = Field(ge=1, description="in-training evaluation + checkpoint period")
    eval_episodes: int = Field(ge=1, description="final evaluation episodes per opponent")
    reasoning: bool = Field(description="a short thought before the action (SFT, training, "
                                        "evaluation)")


#: Per-game defaults for the `tiny` model on CPU, each timed end to end (docs/RESULTS.md).
DEFAULT_BUDGETS: dict[str, GameBudget] = {
    # Kuhn is `make demo`: sized to finish in ≤ 15 min on 2 cores with the tiny build (3.62 M
    # build: 7.0 min cached, README). The other games' times are the 2.08 M build's.
    "kuhn": GameBudget(sft_episodes=40, sft_epochs=2.0, sepo_steps=10, checkpoint_every=5,
                       eval_episodes=40, reasoning=False),
    # Measured: 19.5-20.5 min per seed at lr 3e-5 (SFT 3.8-4.1, SEPO 6.9-7.4, reward-only
    # 7.0-7.4, evaluation 1.3-1.6; docs/RESULTS.md).
    "ipd": GameBudget(sft_episodes=40, sft_epochs=2.0, sepo_steps=20, checkpoint_every=5,
                      eval_episodes=30, reasoning=True),
    # Measured per seed with these budgets (docs/RESULTS.md): auction 10.7 min, negotiation
    # 4.8 min.
    "auction": GameBudget(sft_episodes=40, sft_epochs=2.0, sepo_steps=10, checkpoint_every=5,
                          eval_episodes=30, reasoning=True),
    "negotiation": GameBudget(sft_episodes=40, sft_epochs=2.0, sepo_steps=10,
                              checkpoint_every=5, eval_episodes=30, reasoning=True),
    # 20 steps at lr 3e-5 (`TINY_SEPO_LR_BY_GAME`): 17.3-18.4 min per seed on the 2.08 M build
    # with 40 SFT episodes (SFT 4.2-4.8 min, SEPO 5.7-6.1, reward-only 5.3-6.1, evaluation
    # 2.3-2.5). 120 SFT episodes since 2026-12-06: on the 3.62 M build, seed 0's SFT agent
    # failed to parse 22% of its decisions in the pipeline's evaluation with 40, and 7.9% with
    # 120 (SFT 3.3 → 10.6 min, the whole seed 22.3 min;
    # research/2026-12-06-bargaining-sft-data-and-epochs.md). 5 epochs since 2026-12-06
    # (1,080 steps, SFT ~20 min, the whole seed ~29 min): at 2 the agent almost never read its
    # own values and Pay/r stayed far below the mixture's; at 5, over 3 seeds, Exploit matches
    # the mixture's and Pay/r is 0.9 below it, within noise (docs/SFT.md;
    # research/2026-12-06-bargaining-sft-data-and-epochs.md).
    "bargaining": GameBudget(sft_episodes=120, sft_epochs=5.0, sepo_steps=20,
                             checkpoint_every=5, eval_episodes=30, reasoning=True),
}
#: The budget of a game with no `DEFAULT_BUDGETS` entry (a plugin game): the settings auction
#: and negotiation share, a middle ground never timed on that game; override with the run
#: options (`--steps`, `--sft-episodes`, ...) once it is.
GENERIC_BUDGET = GameBudget(sft_episodes=40, sft_epochs=2.0, sepo_steps=10, checkpoint_every=5,
                            eval_episodes=30, reasoning=True)

#: Stage-2 learning rate when the base model is `tiny` (full fine-tuning of 2-4 M parameters;
#: the rates below were chosen on the 2.08 M build, the default until 2026-12-05),
#: unless `--sepo lr=...` is given. The games' tomls hold the paper's rates (1e-5; Kuhn 3e-6),
#: chosen for LoRA on a 4B model; on `tiny` they move nothing in a CPU-sized run: 6 Kuhn steps
#: at 3e-6 left the KL to the SFT reference at 0.001 and the exact exploitability at 0.693 →
#: 0.695, where 10 steps at 1e-4 reached a KL of 0.06 with the gradient norm near the clip.
TINY_SEPO_LR = 1e-4
#: Games whose `tiny` rate is lower than `TINY_SEPO_LR`. Both write a ~50-token reason before
#: each action, and the KL to the SFT reference is a sum over those tokens: at 1e-4 it reached
#: 8.5-21 by step 20 on IPD and 26-88 by step 10 on bargaining (where the answer format
#: broke), so beta = 0.1 no longer held the policy near SFT. At 3e-5 it stayed at 0.3-1.3 on
#: IPD and the format held on bargaining. Both rates' runs are in research/ (IPD:
#: 2026-11-22-ipd-3-seeds-lr1e-4.md, 2026-11-23-ipd-3-seeds-lr3e-5.md; bargaining:
#: 2026-11-23-auction-negotiation-bargaining-3-seeds.md).
TINY_SEPO_LR_BY_GAME: dict[str, float] = {"ipd": 3e-5, "bargaining": 3e-5}


def tiny_sepo_lr(game: str) -> float:
    """The stage-2 learning rate `sepo run` gives `tiny` on `game`."""
    return TINY_SEPO_LR_BY_GAME.get(game, TINY_SEPO_LR)


Selection = Literal["best", "final"]


class RunConfig(StrictModel):
    """Everything that defines a `sepo run`. Saved as `RUN_DIR/run_config.json`.

    Fields left as None take the game's `DEFAULT_BUDGETS` entry; `sepo` and `sft` pass any
    further `SEPOConfig` / `SFTRunConfig` fields through (validated by those configs), the same
    for both trained conditions.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    field_kind: ClassVar[str] = "run config field"

    games: list[str] = Field(description="games to run ('all' expands to every game)")
    out: Path = Field(description="run directory")
    model: str = Field("tiny", description="base model: 'tiny', 'smollm2-135m', an HF id/path")
    seeds: int = Field(1, ge=1, le=MAX_EVAL_SEEDS,
                       description="training seeds first_seed .. first_seed+seeds-1")
    first_seed: int = Field(0, ge=0, le=MAX_SEED, description="first training seed")

    # --- budgets (None: the game's default)
    sft_episodes: int | None = Field(None, ge=1, le=MAX_EPISODES,
                                     description="SFT demonstrator episodes per opponent")
    # 1,000 epochs over the data is already pure memorisation.
    sft_epochs: float | None = Field(None, gt=0, le=1000, allow_inf_nan=False,
                                     description="SFT epochs")
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="SEPO and reward-only steps")
    checkpoint_every: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="SEPO checkpoint + in-training evaluation period, "
                                              "in steps")
    eval_episodes: int | None = Field(None, ge=1, le=MAX_EPISODES,
                                      description="final evaluation episodes per opponent and "
                                                  "evaluation seed")
    reasoning: bool | None = Field(None, description="None: per game (Kuhn off, others on)")
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS,
                                       description="generation budget per decision "
                                                               "in training and evaluation; "
                                                               "None: sized by SFT to its "
                                                               "longest completion")

    # --- training and evaluation settings shared by every condition
    group_size: int = Field(4, ge=2, le=MAX_GROUP_SIZE,
                            description="SEPO rollouts per group (paper: 4)")
    temperature: float = Field(0.8, gt=0.0, allow_inf_nan=False,
                               description="sampling temperature in training and evaluation "
                                           "(paper: 0.8)")
    train_eval_episodes: int = Field(4, ge=1, le=MAX_EPISODES,
                                     description="episodes per opponent of the in-training "
                                                 "checkpoint evaluation")
    eval_seeds: int = Field(1, ge=1, le=MAX_EVAL_SEEDS,
                            description="evaluation seed indices per training seed")
    n_boot: int = Field(1000, ge=1, le=MAX_BOOTSTRAP,
                        description="bootstrap resamples of the final evaluation")
    select: Selection = Field("best", description="trained checkpoint to evaluate: 'best' (by "
                                                  "in-training Safety, both conditions) or "
                                                  "'final'")
    device: str | None = Field(None, description="cpu or cuda; default: automatic")
    sepo: dict[str, Any] = Field(default_factory=dict, description="extra SEPOConfig fields")
    sft: dict[str, Any] = Field(default_factory=dict, description="extra SFTRunConfig fields")

    @field_validator("games", mode="before")
    @classmethod
    def _games(cls, value: Any) -> list[str]:
        names = [value] if isinstance(value, str) else list(value)
        if "all" in names:
            return game_names()
        if not names:
            raise SepoError("no game given; choices: all, " + ", ".join(game_names()))
        for name in names:
            get_game(name)  # UnknownNameError listing the games
        return list(dict.fromkeys(names))

    @field_validator("select", mode="before")
    @classmethod
    def _select(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in ("best", "final"):
            raise UnknownNameError("checkpoint selection", value, ("best", "final"))
        return value

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, value: Any) -> Any:
        # What every stage accepts: the trainer takes cpu or cuda (GPUs by CUDA_VISIBLE_DEVICES).
        if isinstance(value, str) and value not in ("cpu", "cuda"):
            raise UnknownNameError("device", value, ("cpu", "cuda"))
        return value

    @model_validator(mode="after")
    def _sizes(self) -> RunConfig:
        # Bounds that involve two fields: found now, not after hours of training.
        if self.first_seed + self.seeds - 1 > MAX_SEED:
            raise SepoError(f"--first-seed + --seeds - 1 must be at most {MAX_SEED} (seeds are "
                            f"32-bit); got {self.first_seed} + {self.seeds} - 1")
        for game in self.games:
            episodes = self.budget(game).eval_episodes * self.eval_seeds
            if episodes > MAX_EPISODES or episodes * self.n_boot > MAX_BOOTSTRAP_DRAWS:
                raise SepoError(f"{game}: final evaluation of {episodes:,} episodes per "
                                f"opponent with {self.n_boot:,} bootstrap resamples is too "
                                f"large (at most {MAX_EPISODES:,} episodes and "
                                f"{MAX_BOOTSTRAP_DRAWS:,} episodes × resamples)")
        return self

    @model_validator(mode="after")
    def _passthrough(self) -> RunConfig:
        # Catch a misspelt or forbidden pass-through field now, not an hour into the run.
        from sepo.sft.train import SFT_FIELD_KIND, SFTRunConfig
        from sepo.train.config import SEPOConfig

        owned = {"game", "model", "out", "steps", "group_size", "temperature", "reasoning",
                 "max_new_tokens", "checkpoint_every", "eval_episodes", "seed", "reward_only",
                 "device", "resume"}
        for key in self.sepo:
            if key in owned:
                raise SepoError(f"sepo.{key} is set by the pipeline; use the run option instead")
            check_field(SEPOConfig, SEPOConfig.field_kind, key)
        for key in self.sft:
            if key in {"epochs", "seed", "progress", "device"}:
                raise SepoError(f"sft.{key} is set by the pipeline; use the run option instead")
            check_field(SFTRunConfig, SFT_FIELD_KIND, key)
        # Their values too (`--sepo lr=-1`, `--sepo credit=aux` on a game without the pools
        # it needs): the configs each stage will build, built once now.
        for game in self.games:
            self.sepo_config(game, self.first_seed, Path(self.model), self.out,
                             reward_only=False)
            SFTRunConfig(epochs=self.budget(game).sft_epochs, seed=self.first_seed, **self.sft)
        return self

    # ------------------------------------------------------------------ derived
    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def budget(self, game: str) -> GameBudget:
        """The game's default budget with this run's overrides applied."""
        base = DEFAULT_BUDGETS.get(game, GENERIC_BUDGET)
        overrides = {
            "sft_episodes": self.sft_episodes, "sft_epochs": self.sft_epochs,
            "sepo_steps": self.steps, "checkpoint_every": self.checkpoint_every,
            "eval_episodes": self.eval_episodes, "reasoning": self.reasoning,
        }
        return base.model_copy(update={k: v for k, v in overrides.items() if v is not None})

    def base_is_tiny(self) -> bool:
        """Whether the base model is a `tiny` build: the name, or the path of any build (one
        with other `--set` settings, or the 2.08 M build of docs/RESULTS.md), which all take
        tiny's stage-2 learning rates."""
        if self.model == "tiny":
            return True
        from sepo.models.tiny import build_info

        info = build_info(Path(self.model).expanduser()) if Path(self.model).expanduser(
        ).is_dir() else None
        return info is not None and info.get("name") == "tiny"

    def new_tokens(self, game: str) -> int | None:
        """The generation budget; None lets each checkpoint's `sepo_agent.json` decide (the SFT
        stage sizes it to its longest completion)."""
        return self.max_new_tokens

    def sepo_config(self, game: str, seed: int, model: Path, out: Path, *,
                    reward_only: bool) -> Any:
        from sepo.train.config import SEPOConfig

        b = self.budget(game)
        extra = dict(self.sepo)
        if reward_only:
            # Its λ = 0 gives the adaptive exploiter's group constant rewards: it would only add
            # episodes and change the baseline's random draws. The baseline stays the plain one.
            extra.pop("exploit_best_response", None)
        if self.base_is_tiny():
            extra.setdefault("lr", tiny_sepo_lr(game))
        return SEPOConfig(
            game=game, model=str(model), out=out, steps=b.sepo_steps,
            group_size=self.group_size, temperature=self.temperature, reasoning=b.reasoning,
            max_new_tokens=self.new_tokens(game),
            checkpoint_every=b.checkpoint_every, eval_episodes=self.train_eval_episodes,
            seed=seed, reward_only=reward_only, device=self.device, **extra,
        )

    def comparable(self) -> dict[str, Any]:
        """The fields two runs in one directory must share (all but the seed range)."""
        return self.model_dump(mode="json", exclude={"seeds", "first_seed", "out", "device"})


__all__ = [
    "DEFAULT_BUDGETS",
    "GENERIC_BUDGET",
    "TINY_SEPO_LR",
    "TINY_SEPO_LR_BY_GAME",
    "GameBudget",
    "RunConfig",
    "Selection",
    "tiny_sepo_lr",
]
