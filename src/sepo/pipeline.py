"""`sepo run GAME|all`: the whole pipeline, base model → SFT → SEPO and reward-only → report.

For each game and each training seed k, in `RUN_DIR/<game>/seed<k>/`:

1. `sft-data/`    demonstrator episodes as chat examples (`sepo.sft.data`, seed k);
2. `sft/`         the base model fine-tuned on them (`sepo.sft.train`, seed k);
3. `sepo/`        SEPO from the SFT checkpoint (`sepo.train`, seed k);
4. `reward-only/` the plain-GRPO baseline from the same SFT checkpoint, same seed, same
                  rollout seeds: the only difference is the reward (all λ = 0);
5. `eval/<condition>.json`  the evaluation of base, SFT, reward-only and SEPO on the SAME
                  evaluation episodes (common random numbers), disjoint from the episodes the
                  trainers used to pick their best checkpoints.

Then `results.json`, `results.csv`, `per_opponent.csv`, `report.md` and the PNGs
(`sepo.report`), and the final table is printed.

**Resumable by stage.** Each stage's output is written atomically or carries a completion
marker, so a finished stage is skipped and an interrupted one restarts (a SEPO run resumes from
its last checkpoint). Running the same command again finishes an interrupted run; adding seeds
(`--seeds 3` after `--seeds 1`) adds only the new seeds. A different config in the same
directory is refused (it would mix two experiments), as is a directory holding files sepo did
not write; `--overwrite` deletes what is there and starts the new run. The run holds a lock on
its directory (`sepo.rundir.RunLock`), so a second `sepo run` there stops at once, and a run
that fails before any stage saved work leaves no `run_config.json` behind.

**Budget** (`sepo run kuhn` with the defaults, 2 CPU cores, ≤ 15 minutes including building
`tiny`). The default budgets in `DEFAULT_BUDGETS` were measured on a 2-core CPU machine, on
`tiny` (see `docs/RESULTS.md` for the timings):

- building `tiny` once (cached afterwards): ~3 min;
- SFT data: under a second (rule-based play); SFT: the tiny model is fully fine-tuned on
  `sft_episodes` episodes per opponent for `sft_epochs` epochs (Kuhn: 1,808 examples,
  226 steps), ~4 min;
- SEPO and reward-only: `sepo_steps` steps each. A Kuhn step plays 4 opponents (train +
  exploit pools) × n = 4 rollouts × 6 hands in one batch of 16 episodes, then one update of
  ~10 s (Kuhn prompts are ~300-430 tokens); the in-training evaluations every
  `checkpoint_every` steps cost about a step each;
- evaluation: 4 conditions × `eval_episodes` episodes per opponent × (train + exploit +
  held-out + exact best response) opponents, batched; Kuhn's exact exploitability is one
  batched forward pass.

Kuhn runs without reasoning by default (`reasoning=None` picks it per game): its exact
exploitability is read from the model's action distribution on action-only prompts
(`LMAgent.kuhn_policy`), so training and evaluating on those same prompts makes the exact
number the policy that was trained and played, and it keeps each decision a few tokens.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sepo.config_model import StrictModel, check_field
from sepo.errors import SepoError, UnknownNameError
from sepo.games import game_names, get_game
from sepo.games.base import derive_seed
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
from sepo.report import (
    CONDITION_ORDER,
    RESULTS_FILE,
    RESULTS_SCHEMA,
    build_report,
    load_results,
    rich_table,
    write_json_atomic,
)
from sepo.rundir import (
    LOCK_FILE,
    OUTPUT_MARKER,
    RunLock,
    check_output_dir,
    empty_directory,
    model_input_paths,
    write_output_marker,
)

#: First part of the final evaluation's seed indices and of the evaluated agents' sampling
#: seeds ("SEPO FINAL"). The trainers pick their best checkpoint on evaluation seed index 0;
#: the final evaluation uses indices from `FINAL_EVAL_INDEX` on, so selection and measurement
#: never share an episode.
FINAL_EVAL_INDEX = 1_000_000
_AGENT_TAG = 0x5E90_F1A1
CONFIG_FILE = "run_config.json"
TIMINGS_FILE = "timings.json"
STAGES = ("sft-data", "sft", "sepo", "reward-only", "eval")


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


# ====================================================================== run directory layout
def seed_dir(out: Path, game: str, seed: int) -> Path:
    return out / game / f"seed{seed}"


def _eval_path(out: Path, game: str, seed: int, condition: str) -> Path:
    return seed_dir(out, game, seed) / "eval" / f"{condition}.json"


def _sft_done(path: Path) -> bool:
    from sepo.sft.train import SFT_INFO_FILE

    return (path / SFT_INFO_FILE).exists()


def _sft_data_done(path: Path) -> bool:
    return (path / "card.json").exists()


def training_state(run_dir: Path) -> tuple[int, Path | None]:
    """(steps done, latest checkpoint) of a SEPO run directory, (0, None) when there is none."""
    from sepo.train import checkpoint as ckpt

    last = ckpt.latest_checkpoint(run_dir)
    if last is None:
        return 0, None
    state = ckpt.TrainerState.from_json((last / ckpt.TRAINER_STATE).read_text())
    return state.step, last


def trained_checkpoint(run_dir: Path, select: Selection) -> Path:
    """The checkpoint of a finished SEPO run that the pipeline evaluates."""
    from sepo.train import checkpoint as ckpt

    if select == "best":
        best = run_dir / ckpt.BEST
        if best.exists():
            return best
        # No checkpoint ever had a finite Safety: fall back to the final one, and say so in
        # results.json (`checkpoint` names what was evaluated).
    _, last = training_state(run_dir)
    if last is None:
        raise SepoError(f"{run_dir} holds no checkpoint")
    return last


# ====================================================================== console output
class _Log:
    """Stage lines on the console (rich), with elapsed times; silent when quiet."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.console = Console(quiet=quiet, highlight=False)
        if not self.console.is_terminal:  # a log file: no need to wrap at 80 columns
            self.console = Console(quiet=quiet, highlight=False, width=200)
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, key: str, what: str) -> Iterator[None]:
        self.console.print(f"[bold cyan]▶[/] {what}")
        t0 = time.perf_counter()
        yield
        elapsed = time.perf_counter() - t0
        self.timings[key] = self.timings.get(key, 0.0) + elapsed
        self.console.print(f"  [green]✓[/] {what} [dim]({_duration(elapsed)})[/]")

    def skip(self, what: str) -> None:
        self.console.print(f"[dim]• {what}: done already, skipped[/]")


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


# ====================================================================== stages
def _stage_base(config: RunConfig, log: _Log) -> str:
    """Make sure the base model is there (`tiny` ships in the package; `smollm2-135m` is
    converted and cached on first use) before the first stage that needs it."""
    from sepo.models import resolve

    with log.stage("base", f"base model: {config.model}"):
        path = resolve(config.model, progress=log.console.is_terminal)
    if path != config.model:
        log.console.print(f"  {path}")
    return config.model


def _stage_sft_data(config: RunConfig, game: str, seed: int, log: _Log) -> Path:
    from sepo.sft.data import generate_sft_data

    out = seed_dir(config.out, game, seed) / "sft-data"
    if _sft_data_done(out):
        log.skip(f"{game} seed {seed}: SFT data")
        return out
    if out.exists():
        shutil.rmtree(out)
    b = config.budget(game)
    with log.stage(f"{game}/{seed}/sft-data", f"{game} seed {seed}: SFT data "
                   f"({b.sft_episodes} episodes per opponent)"):
        generate_sft_data(game, out, episodes_per_opponent=b.sft_episodes,
                          reasoning=b.reasoning, seed=seed)
    return out


def _stage_sft(config: RunConfig, game: str, seed: int, base: str, data: Path,
               log: _Log) -> Path:
    from sepo.sft.train import SFTRunConfig, train_sft

    out = seed_dir(config.out, game, seed) / "sft"
    if _sft_done(out):
        log.skip(f"{game} seed {seed}: SFT")
        return out
    if out.exists():
        shutil.rmtree(out)
    b = config.budget(game)
    device = {"cpu": "cpu", None: "auto"}.get(config.device, "cuda")
    sft_config = SFTRunConfig(epochs=b.sft_epochs, seed=seed, progress=log.console.is_terminal,
                              device=device, **config.sft)
    with log.stage(f"{game}/{seed}/sft", f"{game} seed {seed}: SFT ({b.sft_epochs:g} epochs)"):
        result = train_sft(game, base, data, out, sft_config)
    log.console.print(f"  eval loss {result.eval_loss_initial:.3f} → "
                      f"{result.eval_loss_final:.3f}")
    return out


def _stage_train(config: RunConfig, game: str, seed: int, sft: Path, condition: str,
                 log: _Log) -> Path:
    from sepo.train import train_sepo

    out = seed_dir(config.out, game, seed) / condition
    sepo_config = config.sepo_config(game, seed, sft, out, reward_only=condition == "reward-only")
    done, last = training_state(out)
    if done >= sepo_config.steps:
        log.skip(f"{game} seed {seed}: {condition} ({done} steps)")
        return out
    if last is not None:
        sepo_config.resume = True
        what = f"{game} seed {seed}: {condition}, resumed at step {done}/{sepo_config.steps}"
    else:
        if out.exists():  # interrupted before its first checkpoint: nothing to keep
            shutil.rmtree(out)
        what = f"{game} seed {seed}: {condition} ({sepo_config.steps} steps)"
    with log.stage(f"{game}/{seed}/{condition}", what):
        result = train_sepo(sepo_config, progress=log.console.is_terminal)
    if result.best_step is not None:
        log.console.print(f"  best checkpoint: step {result.best_step}, in-training Safety "
                          f"{result.best_safety:.3f}")
    return out


def _agent(config: RunConfig, game: str, seed: int, model: str | Path) -> Any:
    from sepo.agents import load_lm_agent
    from sepo.models.util import resolve_device

    b = config.budget(game)
    device = resolve_device(config.device)
    return load_lm_agent(str(model), temperature=config.temperature, reasoning=b.reasoning,
                         max_new_tokens=config.new_tokens(game),
                         seed=derive_seed(_AGENT_TAG, seed), device=device)


def _stage_eval(config: RunConfig, game: str, seed: int, condition: str, model: str | Path,
                log: _Log) -> dict[str, Any]:
    """Evaluate one condition and write `eval/<condition>.json` atomically."""
    from sepo.evaluation import evaluate, read_tabular_policy

    path = _eval_path(config.out, game, seed, condition)
    if path.exists():
        log.skip(f"{game} seed {seed}: evaluation of {condition}")
        return json.loads(path.read_text())
    b = config.budget(game)
    with log.stage(f"{game}/{seed}/eval", f"{game} seed {seed}: evaluation of {condition} "
                   f"({b.eval_episodes} episodes per opponent)"), _progress(log) as update:
        agent = _agent(config, game, seed, model)
        report = evaluate(game, agent, episodes=b.eval_episodes, seeds=config.eval_seeds,
                          n_boot=config.n_boot, seed=FINAL_EVAL_INDEX + seed * config.eval_seeds,
                          progress=update)
        # Games with exact solutions (Kuhn): the agent's table, for the report's policy figure.
        policy = read_tabular_policy(get_game(game), agent)
    entry = {
        "game": game, "seed": seed, "condition": condition,
        "checkpoint": _relative_or_name(model, config.out),
        "report": report.to_dict(),
        "kuhn_policy": dict(policy) if policy is not None else None,
    }
    write_json_atomic(path, entry)
    del agent
    return entry


@contextmanager
def _progress(log: _Log) -> Iterator[Callable[[int, int], None]]:
    from sepo.console import new_progress

    with new_progress("bar", "count", "elapsed", console=log.console, transient=True) as bar:
        task = bar.add_task("rounds", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _relative_or_name(model: str | Path, out: Path) -> str:
    path = Path(model)
    if path.exists():
        try:
            return str(path.resolve().relative_to(out.resolve()))
        except ValueError:
            return str(path.resolve())
    return str(model)


# ====================================================================== the pipeline
#: What a run directory holds before any stage has saved work.
_BOOKKEEPING = frozenset({CONFIG_FILE, OUTPUT_MARKER, LOCK_FILE, TIMINGS_FILE})


def _check_run_dir(config: RunConfig, *, overwrite: bool) -> tuple[RunConfig, bool]:
    """Refuse to mix two different experiments in one directory (or to write into files sepo
    did not write). Returns the config to record (this one, with the union of the seeds ever
    run here) and whether the directory must be emptied first: `overwrite` over another
    config or foreign files. Writes nothing; `_record_run` does once the run has started."""
    state = check_output_dir(config.out, inputs=model_input_paths(config.model),
                             overwrite=overwrite, made_by="run")
    path = config.out / CONFIG_FILE
    if state == "replace":
        return config, True
    if state != "earlier" or not path.exists():
        return config, False
    try:
        saved = RunConfig.model_validate_json(path.read_text())
    except (ValueError, SepoError, OSError) as err:
        problem = f"a run config this version cannot read ({' '.join(str(err).split())[:200]})"
    else:
        mine, theirs = config.comparable(), saved.comparable()
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        if not diff:
            # Keep the union of the seeds ever run here.
            lo = min(saved.first_seed, config.first_seed)
            hi = max(saved.first_seed + saved.seeds, config.first_seed + config.seeds)
            return config.model_copy(update={"first_seed": lo, "seeds": hi - lo}), False
        changes = ", ".join(f"{k}: {theirs.get(k)!r} → {mine[k]!r}" for k in diff)
        problem = f"a run with another config ({changes})"
    if overwrite:
        return config, True
    raise SepoError(f"{config.out} holds {problem}; choose another --out, or add --overwrite "
                    "to delete that run and start this one (only --seeds/--first-seed may "
                    "change to continue it)")


def _record_run(config: RunConfig, record: RunConfig) -> None:
    """Mark the directory as this run's. Done once the base model is there, so that a run
    that fails before it starts (an unknown model) leaves no config refusing the corrected
    command."""
    write_output_marker(config.out, "run")
    write_json_atomic(config.out / CONFIG_FILE, record.model_dump(mode="json"))


def _forget_unstarted_run(out: Path) -> None:
    """After a failure of an invocation that recorded the run itself: if no stage saved
    anything, remove the record (the RunLock then removes the directory if it made it), for
    the same reason as `_record_run`'s timing."""
    if not out.is_dir() or any(p.name not in _BOOKKEEPING for p in out.iterdir()):
        return
    for name in (CONFIG_FILE, OUTPUT_MARKER):
        (out / name).unlink(missing_ok=True)


def run_pipeline(config: RunConfig, *, quiet: bool = False, overwrite: bool = False) -> Path:
    """Run every stage of every game and seed (skipping finished ones) and build the report.

    Returns the run directory. `results.json` holds every evaluation found in the directory
    (also seeds from earlier invocations), so the report covers all of them. The run holds
    `RunLock(out, "run")` throughout: a second run in the same directory stops at once.
    `overwrite` deletes a run with another config (or files sepo did not write) in `out`
    before starting, once the base model is there; a run with this config is continued.
    """
    # Refused here before anything is created; checked again under the lock.
    check_output_dir(config.out, inputs=model_input_paths(config.model), overwrite=overwrite,
                     made_by="run")
    with RunLock(config.out, "run"):
        record, start_over = _check_run_dir(config, overwrite=overwrite)
        recorded = (config.out / CONFIG_FILE).exists() and not start_over
        try:
            return _run_stages(config, record, start_over=start_over, quiet=quiet)
        except BaseException:
            if not recorded:
                _forget_unstarted_run(config.out)
            raise


def _run_stages(config: RunConfig, record: RunConfig, *, start_over: bool,
                quiet: bool) -> Path:
    """`run_pipeline` once the directory is checked and locked."""
    log = _Log(quiet)
    started = time.perf_counter()
    log.console.print(f"[bold]sepo run[/] {', '.join(config.games)} · model {config.model} · "
                      f"seeds {', '.join(map(str, config.seed_list))} · {config.out}")
    from sepo.models.util import transformers_progress

    # The stage lines say what is loading; transformers' per-load bars would only be noise.
    with transformers_progress(False):
        base = _stage_base(config, log)
        if start_over:
            empty_directory(config.out)
        _record_run(config, record)
        for game in config.games:
            for seed in config.seed_list:
                data = _stage_sft_data(config, game, seed, log)
                sft = _stage_sft(config, game, seed, base, data, log)
                trained = {c: _stage_train(config, game, seed, sft, c, log)
                           for c in ("sepo", "reward-only")}
                models: dict[str, str | Path] = {
                    "base": base, "sft": sft,
                    **{c: trained_checkpoint(d, config.select) for c, d in trained.items()},
                }
                for condition in CONDITION_ORDER:
                    _stage_eval(config, game, seed, condition, models[condition], log)

    log.timings["total_s"] = time.perf_counter() - started
    _write_results(config, log.timings)
    with log.stage("report", "report: tables and plots"):
        report = build_report([config.out])
    results = load_results(config.out)
    for game in config.games:
        log.console.print(rich_table(results["aggregates"], game, width=log.console.width))
    log.console.print(f"[bold]report:[/] {report}  ·  total {_duration(log.timings['total_s'])}")
    return config.out


def _write_results(config: RunConfig, timings: dict[str, float]) -> None:
    """results.json from every evaluation on disk (this invocation's and earlier ones')."""
    evaluations, training = [], []
    for game_dir in sorted(p for p in config.out.iterdir() if p.is_dir()):
        for sd in sorted(game_dir.glob("seed*")):
            seed = int(sd.name.removeprefix("seed"))
            conditions = {p.stem: json.loads(p.read_text()) for p in (sd / "eval").glob("*.json")}
            evaluations.extend(conditions[c] for c in CONDITION_ORDER if c in conditions)
            for condition in ("sepo", "reward-only"):
                metrics = sd / condition / "metrics.csv"
                if metrics.exists():
                    trained = json.loads((sd / condition / "config.json").read_text())
                    training.append({
                        "game": game_dir.name, "seed": seed, "condition": condition,
                        # runs from before the setting existed used per-group scaling
                        "advantage": trained.get("advantage", "group"),
                        "run_dir": str((sd / condition).relative_to(config.out)),
                        "metrics_csv": str(metrics.relative_to(config.out)),
                    })
    timings_path = config.out / TIMINGS_FILE
    history = json.loads(timings_path.read_text()) if timings_path.exists() else []
    history.append({"finished": _now(), **{k: round(v, 2) for k, v in timings.items()}})
    write_json_atomic(timings_path, history)
    write_json_atomic(config.out / RESULTS_FILE, {
        "schema": RESULTS_SCHEMA,
        "created": _now(),
        "sepo_version": _version(),
        "config": json.loads((config.out / CONFIG_FILE).read_text()),
        "evaluations": evaluations,
        "training": training,
        "timings": history[-1],
        "environment": _environment(config),
    })


def _environment(config: RunConfig) -> dict[str, Any]:
    """Where the numbers were made. Seeded runs repeat bit for bit on one host, but float
    rounding differs between CPUs (and GPUs), so a tiny build, and all trained from it, can
    differ elsewhere (docs/BENCHMARKS.md, "Reproducibility across machines"): the versions,
    the device and the base build's weights digest say which case a comparison is."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from sepo.machine import cpu_name
    from sepo.models import resolve
    from sepo.models.tiny import build_info
    from sepo.models.util import weights_digest

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    env: dict[str, Any] = {
        "python": platform.python_version(),
        **{p: installed(p) for p in ("torch", "transformers", "trl", "peft", "accelerate")},
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "base_weights_digest": None,
    }
    # Only a tiny build's digest: hashing a large base model would read all of its weights.
    path = Path(resolve(config.model, progress=False))
    info = build_info(path) if path.is_dir() else None
    if info is not None and info.get("name") == "tiny":
        if "weights_digest" in info:
            env["base_weights_digest"] = info["weights_digest"]
        else:  # built before builds recorded it; tiny loads in about a second
            from sepo.models import load_model

            model, _ = load_model(str(path), device="cpu", dtype="float32", progress=False)
            env["base_weights_digest"] = weights_digest(model)
    return env


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sepo")
    except PackageNotFoundError:
        return "unknown"


__all__ = [
    "DEFAULT_BUDGETS",
    "FINAL_EVAL_INDEX",
    "GENERIC_BUDGET",
    "TINY_SEPO_LR",
    "TINY_SEPO_LR_BY_GAME",
    "GameBudget",
    "RunConfig",
    "run_pipeline",
    "seed_dir",
    "tiny_sepo_lr",
    "trained_checkpoint",
]
