"""`RunConfig`: everything that defines a `sepo run`, and the settings each stage derives from it.

A budget field left as None takes the game's `[budget]` table (`<game>.toml`, read by the game
layer as a `GameBudget`); `sepo` and `sft` pass further `SEPOConfig` / `SFTRunConfig` fields
through to both trained conditions. Every check that can fail runs when the config is built,
not an hour into the run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from sepo.config_model import StrictModel, check_field
from sepo.errors import SepoError, UnknownNameError
from sepo.games import GameBudget, game_names, get_game
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

Selection = Literal["best", "final"]
#: Fields the pipeline sets that a further condition may set for itself.
CONDITION_OWN = frozenset({"steps"})

#: The conditions every run has; `RunConfig.conditions` adds trained ones under other names.
FIXED_CONDITIONS = ("base", "sft", "reward-only", "sepo")
#: What a further condition may not be called: a fixed condition or another entry of the seed
#: directory (its trained run lives in `RUN_DIR/<game>/seed<k>/<name>/`).
_RESERVED_NAMES = frozenset(FIXED_CONDITIONS) | {"sft-data", "eval"}
_CONDITION_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


class RunConfig(StrictModel):
    """Everything that defines a `sepo run`. Saved as `RUN_DIR/run_config.json`.

    Fields left as None take the game's `[budget]` (`<game>.toml`); `sepo` and `sft` pass any
    further `SEPOConfig` / `SFTRunConfig` fields through (validated by those configs), the same
    for both trained conditions.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    field_kind: ClassVar[str] = "run config field"

    games: list[str] = Field(description="games to run ('all' expands to every game)")
    out: Path = Field(description="run directory; the same run there again continues it")
    model: str = Field("tiny", description="base model: 'tiny', 'smollm2-135m', an HF id/path")
    seeds: int = Field(1, ge=1, le=MAX_EVAL_SEEDS,
                       description="training seeds first_seed .. first_seed+seeds-1 (≥ 3 for "
                                   "intervals across seeds)")
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
    reasoning: bool | None = Field(None, description="a short thought before the action (SFT, "
                                   "training, evaluation); None: per game (Kuhn off, others on)")
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
                                                  "in-training Safety, among the checkpoints "
                                                  "whose answers parse and, under budgets, "
                                                  "within them) or 'final'")
    device: str | None = Field(None, description="cpu or cuda; default: automatic")
    sepo: dict[str, Any] = Field(default_factory=dict, description="extra SEPOConfig fields")
    sft: dict[str, Any] = Field(default_factory=dict, description="extra SFTRunConfig fields")
    # A study's ablations on the same SFT checkpoints and evaluation episodes, so that they are
    # paired by seed with SFT and reward-only (docs/RESULTS.md's conditions are made this way).
    conditions: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="further trained conditions: name → SEPOConfig fields over `sepo`, e.g. "
                    "conditions.sepo-paper = {advantage = 'group', oracle = false}; each is "
                    "trained from the same SFT checkpoint, evaluated on the same episodes and "
                    "compared with SFT, reward-only and SEPO, paired by seed. A condition may "
                    "set its own `steps` (a budget's multiplier may need more steps than the "
                    "game's budget gives). Adding one to an earlier run trains and evaluates "
                    "only it")

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

    @field_validator("conditions", mode="before")
    @classmethod
    def _conditions(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value  # pydantic names the type
        for name, fields in value.items():
            if not isinstance(name, str) or not _CONDITION_NAME.fullmatch(name):
                raise SepoError(f"condition name {name!r}: use 1-40 lower-case letters, digits "
                                "and '-', starting with a letter or digit")
            if name in _RESERVED_NAMES:
                raise SepoError(f"condition name {name!r} is taken; reserved: "
                                + ", ".join(sorted(_RESERVED_NAMES)))
            if not isinstance(fields, dict):
                raise SepoError(f"conditions.{name} must be a table of SEPOConfig fields "
                                f"(e.g. {{advantage = 'group'}}), got {fields!r}")
        return value

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

        # What the pipeline sets is what the stages' configs are built with, not a list kept
        # by hand beside them.
        game, seed = self.games[0], self.first_seed
        owned = self.sepo_settings(game, seed, Path(self.model), self.out, reward_only=False)
        tables = {"sepo": self.sepo} | {f"conditions.{n}": f for n, f in self.conditions.items()}
        for table, fields in tables.items():
            for key in fields:
                if key in owned and not (key in CONDITION_OWN and table != "sepo"):
                    raise SepoError(f"{table}.{key} is set by the pipeline; use the run option "
                                    "instead")
                check_field(SEPOConfig, SEPOConfig.field_kind, key)
        for key in self.sft:
            if key in self.sft_settings(game, seed, progress=False):
                raise SepoError(f"sft.{key} is set by the pipeline; use the run option instead")
            check_field(SFTRunConfig, SFT_FIELD_KIND, key)
        # Their values too (`--sepo lr=-1`, `--sepo credit=aux` on a game without the pools
        # it needs): the configs each stage will build, built once now.
        for game in self.games:
            for condition in self.trained_conditions:
                self.sepo_config(game, self.first_seed, Path(self.model), self.out, condition)
            SFTRunConfig(**self.sft_settings(game, self.first_seed, progress=False), **self.sft)
        return self

    # ------------------------------------------------------------------ derived
    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    @property
    def trained_conditions(self) -> list[str]:
        """SEPO, reward-only and the further conditions, in training order."""
        return ["sepo", "reward-only", *self.conditions]

    def budget(self, game: str) -> GameBudget:
        """The game's `[budget]` with this run's overrides applied."""
        overrides = {
            "sft_episodes": self.sft_episodes, "sft_epochs": self.sft_epochs,
            "sepo_steps": self.steps, "checkpoint_every": self.checkpoint_every,
            "eval_episodes": self.eval_episodes, "reasoning": self.reasoning,
        }
        return get_game(game).budget.replace(
            **{k: v for k, v in overrides.items() if v is not None})

    def base_is_tiny(self) -> bool:
        """Whether the base model is a `tiny` build: the name, or the path of any build (one
        with other `--set` settings, or the earlier 2.08 M build), which all take
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

    def sepo_settings(self, game: str, seed: int, model: Path, out: Path, *,
                      reward_only: bool) -> dict[str, Any]:
        """The SEPOConfig fields the pipeline sets for one trained condition; `sepo` may set
        any other. `resume` is set by the stage itself, when it finds a checkpoint."""
        b = self.budget(game)
        return {"game": game, "model": str(model), "out": out, "steps": b.sepo_steps,
                "group_size": self.group_size, "temperature": self.temperature,
                "reasoning": b.reasoning, "max_new_tokens": self.new_tokens(game),
                "checkpoint_every": b.checkpoint_every,
                "eval_episodes": self.train_eval_episodes, "seed": seed,
                "reward_only": reward_only, "device": self.device, "resume": False}

    def sft_settings(self, game: str, seed: int, *, progress: bool) -> dict[str, Any]:
        """The SFTRunConfig fields the pipeline sets for one SFT run; `sft` may set any other."""
        device = {"cpu": "cpu", None: "auto"}.get(self.device, "cuda")
        return {"epochs": self.budget(game).sft_epochs, "seed": seed, "progress": progress,
                "device": device}

    def sepo_config(self, game: str, seed: int, model: Path, out: Path,
                    condition: str = "sepo") -> Any:
        """The SEPOConfig of one trained condition: "sepo", "reward-only" or a name of
        `conditions` (whose fields override `sepo`'s)."""
        from sepo.train.config import SEPOConfig

        if condition not in self.trained_conditions:
            raise UnknownNameError("trained condition", condition, self.trained_conditions)
        b = self.budget(game)
        reward_only = condition == "reward-only"
        settings = self.sepo_settings(game, seed, model, out, reward_only=reward_only)
        extra = {**self.sepo, **self.conditions.get(condition, {})}
        settings.update({k: extra.pop(k) for k in CONDITION_OWN if k in extra})
        if reward_only:
            # Its λ = 0 gives the adaptive exploiter's group constant rewards: it would only add
            # episodes and change the baseline's random draws. The baseline stays the plain one.
            extra.pop("exploit_best_response", None)
            # A budget steers the λ of penalties the baseline does not have.
            extra.pop("budgets", None)
        if self.base_is_tiny():
            extra.setdefault("lr", b.tiny_lr)
        return SEPOConfig(**settings, **extra)

    def comparable(self) -> dict[str, Any]:
        """The fields two runs in one directory must share: all but the seed range and the
        further conditions (which may grow; `layout.check_run_dir` checks those it shares)."""
        return self.model_dump(mode="json",
                               exclude={"seeds", "first_seed", "out", "device", "conditions"})


__all__ = ["FIXED_CONDITIONS", "RunConfig", "Selection"]
