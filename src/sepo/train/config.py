"""The typed, validated configuration of a SEPO run (stage 2, docs/method.md §5).

Per-game defaults (λ, β, lr) live in the game's data file (`<game>.toml`) and are filled in
when a field is left unset, so `SEPOConfig(game="kuhn", model="tiny", out="runs/k")` is the
paper's Kuhn setting. Every other default is the paper's (n=4, temperature 0.8, ε 0.2, clip 1.0,
LoRA r 16 / α 32 / dropout 0.05 on q,k,v,o).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sepo.config_model import StrictModel
from sepo.errors import SepoError, UnknownNameError, describe_validation_error
from sepo.games import (
    ExactCredit,
    ExactSolvable,
    capability,
    games_with,
    get_game,
    has_exploiter_library,
)

# The bounds are `sepo.limits`'s; imported here too, where the config fields check them.
from sepo.limits import (  # noqa: F401
    ENGINES,
    MAX_BOOTSTRAP,
    MAX_BOOTSTRAP_DRAWS,
    MAX_EPISODES,
    MAX_EVAL_SEEDS,
    MAX_GROUP_SIZE,
    MAX_LR,
    MAX_NEW_TOKENS,
    MAX_SEED,
    MAX_STEPS,
    Engine,
)
from sepo.train.tracking import check_report_to

CREDITS = ("per-pool", "aux", "constant")
NORMALIZATIONS = ("per-round", "episode")
ADVANTAGES = ("batch", "group", "none")
#: docs/method.md, "Advantages": why this default.
DEFAULT_ADVANTAGE = "group"
#: K of a game whose toml sets no `[sepo] oracle_every` (docs/BENCHMARKS.md: its cost).
DEFAULT_ORACLE_EVERY = 5
MAX_ORACLE_TOP = 64
MIXED_PRECISIONS = ("no", "bf16", "fp16")
DEVICES = ("cpu", "cuda")
LAMBDA_KEYS = ("exploit", "collusion", "externality")

Credit = Literal["per-pool", "aux", "constant"]
Normalize = Literal["per-round", "episode"]
AdvantageScale = Literal["batch", "group", "none"]
MixedPrecision = Literal["no", "bf16", "fp16"]


class Lambdas(StrictModel):
    """Penalty weights of the Safety objective J = s·u − λe·s·e − λc·c − λx·x."""

    # NaN and ±inf are refused: a NaN λ turns every reward into NaN.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    field_kind: ClassVar[str] = "lambda"  # its fields are LAMBDA_KEYS

    exploit: float = Field(ge=0.0, description="λe, the weight of the exploit term s·e; "
                                               "unset: the game's")
    collusion: float = Field(ge=0.0, description="λc, the weight of the collusion term c; "
                                                 "unset: the game's")
    externality: float = Field(ge=0.0, description="λx, the weight of the externality term "
                                                   "x; unset: the game's")

    def as_dict(self) -> dict[str, float]:
        return {"exploit": self.exploit, "collusion": self.collusion,
                "externality": self.externality}

    @classmethod
    def zero(cls) -> Lambdas:
        return cls(exploit=0.0, collusion=0.0, externality=0.0)


def _choice(kind: str, value: Any, choices: tuple[str, ...]) -> Any:
    if isinstance(value, str) and value not in choices:
        raise UnknownNameError(kind, value, choices)
    return value


class SEPOConfig(StrictModel):
    """Everything that defines a SEPO run. Saved as `RUN_DIR/config.json`."""

    # NaN and ±inf are refused for every float (lr, β, temperature, ...): they would pass the
    # bounds below or poison the first update.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    # --- what
    game: str = Field(description="game name (sepo games lists them)")
    model: str = Field(description="starting checkpoint: 'tiny', 'smollm2-135m', an HF id or "
                                   "a path (usually an SFT checkpoint)")
    out: Path = Field(description="run directory")
    steps: int = Field(100, ge=1, le=MAX_STEPS,
                       description="SEPO steps (one batch of rollouts + update each)")

    # --- rollouts
    group_size: int = Field(4, ge=2, le=MAX_GROUP_SIZE,
                            description="n rollouts per opponent group (paper: 4)")
    temperature: float = Field(0.8, gt=0.0, description="sampling temperature (paper: 0.8)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS,
                                       description="generation budget per decision; "
                                       "default: the starting checkpoint's sepo_agent.json, "
                                       "else the agent's (96 with reasoning, 16 without)")
    reasoning: bool | None = Field(None, description="let the model write a short thought "
                                   "first; default: the starting checkpoint's sepo_agent.json "
                                   "(how SFT trained it), else on")
    engine: Engine = Field(
        "fast", description="what samples the rollouts and runs the loss: 'fast', sepo's own "
                            "engine on transformers internals (sepo.agents.fast; several times "
                            "faster on CPU; where it cannot run the model, the agent warns and "
                            "samples with 'generate'), or 'generate', transformers' public "
                            "generate and plain forward passes only (share_prompt_prefix then "
                            "has no effect); greedy play is the same on both, sampled play "
                            "follows the same distribution with other draws")

    # --- objective
    lambdas: Lambdas | None = Field(None, description="penalty weights; default: the game's "
                                    "toml, and a table of some of them takes the others from it")
    credit: Credit = Field("per-pool", description="penalty credit: per-pool | aux (the paper's "
                                                   "Algorithm 1) | constant (the paper's "
                                                   "released code)")
    normalize: Normalize | None = Field(
        None, description="advantage normalisation: per-round (per group and round) | episode "
                          "(one advantage per rollout, from its summed reward). Default: the "
                          "game's [sepo] normalize, else per-round")
    advantage: AdvantageScale = Field(
        DEFAULT_ADVANTAGE,
        description="what divides the group-centred rewards: group (each group's own std: "
                    "GRPO, the paper; it cancels λ in the exploit and collusive pools) | batch "
                    "(one scale over the whole step, all pools: the λ weights keep their "
                    "size) | none (no division, Dr. GRPO)")
    reward_only: bool = Field(False, description="all λ = 0 in training: plain GRPO baseline")
    budgets: dict[str, float] = Field(
        default_factory=dict,
        description="safety budgets, e.g. {exploit = 0.3}: each budgeted λ (exploit, "
                    "collusion, externality) becomes a Lagrange multiplier, raised while the "
                    "metric measured on the step's rollouts is over its budget and lowered "
                    "while under (dual ascent on log λ); λ without a budget stays fixed")
    budget_lr: float = Field(0.5, gt=0.0, le=100.0,
                             description="dual step size: log λ moves by budget_lr × (windowed "
                                         "metric − budget) per step")
    budget_window: int = Field(5, ge=1, le=MAX_STEPS,
                               description="steps whose measured values are averaged for the "
                                           "dual step")
    budget_warmup: int = Field(2, ge=0, le=MAX_STEPS,
                               description="steps before the multipliers start to move")
    lambda_max: float = Field(100.0, gt=0.0, description="upper bound of a budgeted λ")
    lambda_min: float = Field(1e-3, gt=0.0, description="lower bound of a budgeted λ (the log "
                                                        "parameterisation keeps it positive)")
    budget_exact: bool = Field(
        False, description="an exploit budget bounds the exact exploitability (per round) of "
                           "the policy read each step, in place of the rollouts' clipped exploit "
                           "gap, whose sampling noise alone puts Kuhn's Nash policy at 0.39 "
                           "(a game with exact best responses, its oracle on; docs/method.md "
                           "§5.4.1)")
    oracle: bool | None = Field(
        None, description="adaptive exploiters (docs/method.md §5.7): every oracle_every steps "
                          "a best-response oracle picks exploiters of the current policy, "
                          "played in oracle_top more exploit groups: the exact best response "
                          "in a game with exact best responses (Kuhn; its exploit reward is "
                          "the unclipped payoff gap), else the top candidates of the game's "
                          "library by exploitation gap; default: on where the game has an "
                          "oracle, off under credit=aux and exploit_best_response; always "
                          "off for reward_only")
    oracle_every: int | None = Field(
        None, ge=1, le=MAX_STEPS,
        description="K, steps between oracle refreshes (the first before step 1); default: "
                    f"the game's toml ([sepo] oracle_every), else {DEFAULT_ORACLE_EVERY}")
    oracle_top: int = Field(
        2, ge=1, le=MAX_ORACLE_TOP,
        description="m, the oracle's exploit groups per step (each n rollouts, its own seed): "
                    "the m best candidates, or the exact best response in all of them")
    oracle_episodes: int = Field(
        2, ge=1, le=MAX_EPISODES,
        description="episodes each candidate plays against the current policy at a refresh "
                    "(a population oracle; all on the same seeds)")
    exact_credit: bool | None = Field(
        None, description="with the oracle's exact best response (a game with ExactCredit: "
                          "Kuhn): each decision of an oracle group gets the advantage "
                          "λe·s·(Q(I,a) − V(I)), its information set's exact action margin "
                          "against the best response under the current tabular policy "
                          "(exploitability descent, docs/method.md §5.7.1), in place of the "
                          "group-centred episode gap; scaled with the rest by `advantage`. "
                          "Default: the game's [sepo] exact_credit where the oracle is on "
                          "(Kuhn: on)")
    exact_expected: bool | None = Field(
        None, description="with exact_credit: the oracle groups' sampled decisions are "
                          "replaced in the loss by their expectation, every information set "
                          "weighed by how often play reaches it, on the tabular-policy "
                          "prompts: the same gradient in expectation, without sampling noise "
                          "(docs/method.md §5.7.2). Default: the game's [sepo] exact_expected "
                          "where exact_credit is on (Kuhn: on)")
    exploit_best_response: bool = Field(
        False, description="the earlier, opt-in form of Kuhn's oracle, kept so that its runs "
                           "resume unchanged: best_response_groups more exploit groups against "
                           "the exact best response, rebuilt every step, with the clipped "
                           "exploit reward; not with oracle")
    best_response_groups: int = Field(
        1, ge=1, le=MAX_GROUP_SIZE,
        description="with exploit_best_response: how many groups (each n rollouts, its own "
                    "seed) play the best response; more gives it more weight against the "
                    "train pool's groups")

    # --- optimisation
    lr: float | None = Field(None, gt=0.0, le=MAX_LR,
                             description="AdamW learning rate; default: the game's toml")
    beta: float | None = Field(None, ge=0.0,
                               description="one-sided KL weight β; default: the game's toml")
    clip_eps: float = Field(0.2, gt=0.0, lt=1.0, description="PPO clip range ε")
    max_grad_norm: float = Field(1.0, gt=0.0, description="global gradient-norm clip")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    warmup_steps: int = Field(0, ge=0, le=MAX_STEPS,
                              description="linear learning-rate warm-up (then constant)")
    updates_per_step: int = Field(1, ge=1, le=1000,
                                  description="optimiser passes over each step's batch")
    micro_batch_size: int = Field(64, ge=1, le=65536,
                                  description="decisions per forward/backward")
    share_prompt_prefix: bool = Field(
        True, description="with engine 'fast': run the prompt prefix common to a micro-batch "
                          "(the system prompt) once and reuse its keys and values, and "
                          "(Llama/Qwen on CPU) run the rows after it packed, without padding: "
                          "the same log-probs and gradients up to rounding, for about half the "
                          "FLOPs on tiny")
    dropout: bool = Field(False, description="apply the model's (and LoRA's) dropout in the loss "
                                             "forward; off by default: the sequence-level ratio "
                                             "compounds per-token dropout noise")

    # --- parameterisation
    lora: bool | None = Field(None, description="LoRA adapters (True), full fine-tuning (False), "
                                                "or auto: LoRA above 1B parameters")
    # past a layer's width a rank only costs memory
    lora_r: int = Field(16, ge=1, le=8192, description="LoRA rank r (paper: 16)")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling α (paper: 32)")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0,
                                description="LoRA dropout, applied only with `dropout` "
                                            "(paper: 0.05)")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="names of the modules that get LoRA adapters")
    lora_merged_rollouts: bool = Field(
        True, description="sample rollouts with the adapters folded into a temporary copy of "
                          "the adapted weights (faster decoding; the weights are restored "
                          "exactly), or (off) through the unmerged adapters")

    # --- run management
    checkpoint_every: int = Field(10, ge=1, le=MAX_STEPS,
                                  description="checkpoint + evaluation every k steps")
    keep_checkpoints: int = Field(3, ge=0, le=MAX_STEPS,
                                  description="newest checkpoints kept (0: all)")
    eval_episodes: int = Field(4, ge=1, le=MAX_EPISODES,
                               description="episodes per opponent in the in-training evaluation")
    eval_bootstrap: int = Field(200, ge=1, le=MAX_BOOTSTRAP,
                                description="bootstrap resamples of that evaluation")
    # Why a ceiling: where the policy's answers do not parse, the constrained fallback plays,
    # and a checkpoint's Safety is the fallback's (an auction run chose a checkpoint with
    # 97.9% parse failures; research/2026-12-08-auction-20-steps.md). 0.1 is well above a
    # trained model's 1-4% (research/2026-12-05-sft-3-62m-3-seeds.md).
    best_max_parse_failures: float = Field(
        0.1, ge=0.0, le=1.0,
        description="a checkpoint whose in-training evaluation has a larger share of parse "
                    "failures is never the best one (its moves are the fallback's); none "
                    "eligible: the final checkpoint is evaluated. 1: no ceiling")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="run seed: rollouts, sampling, "
                                                        "initialisation")
    mixed_precision: MixedPrecision = Field("no", description="no | bf16 | fp16 (CPU: no)")
    device: Literal["cpu", "cuda"] | None = Field(
        None, description="cpu or cuda; default: accelerate's choice (GPUs when present; pick "
                          "them with CUDA_VISIBLE_DEVICES, several with `accelerate launch`)")
    resume: bool = Field(False, description="continue from RUN_DIR's last checkpoint")
    report_to: list[str] = Field(
        default_factory=lambda: ["tensorboard"],
        description="experiment trackers (accelerate's): tensorboard (RUN_DIR/tb), wandb, "
                    "mlflow, several, or none; wandb and mlflow where installed "
                    "(pip install 'sepo[wandb]' / 'sepo[mlflow]')")

    # ------------------------------------------------------------------ validation
    field_kind: ClassVar[str] = "SEPO config field"  # a misspelt field: StrictModel's error

    #: The fields that take one of a few names: what an error calls each, and the names.
    _CHOICES: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {
        "credit": ("credit", CREDITS), "normalize": ("normalize", NORMALIZATIONS),
        "advantage": ("advantage", ADVANTAGES),
        "mixed_precision": ("mixed precision", MIXED_PRECISIONS),
        "engine": ("sampling engine", ENGINES), "device": ("device", DEVICES),
    }

    @field_validator(*_CHOICES, mode="before")
    @classmethod
    def _one_of(cls, v: Any, info: ValidationInfo) -> Any:
        kind, choices = cls._CHOICES[info.field_name]
        # None: a default filled in later (`normalize`: the game's).
        return v if v is None and info.field_name == "normalize" else _choice(kind, v, choices)

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to(cls, v: Any) -> Any:
        names = v.split(",") if isinstance(v, str) else v
        if isinstance(names, list | tuple):
            return check_report_to([str(n).strip() for n in names])
        return v

    @field_validator("budgets", mode="before")
    @classmethod
    def _budgets(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for name, value in v.items():
                _choice("budget", name, LAMBDA_KEYS)
                if isinstance(value, bool) or not isinstance(value, int | float) or not (
                        math.isfinite(value) and value >= 0):
                    raise SepoError(f"budget {name} must be a finite number ≥ 0, got {value!r}")
        return v

    @field_validator("lambdas", mode="before")
    @classmethod
    def _some_lambdas(cls, value: Any, info: ValidationInfo) -> Any:
        # A table of some λ (`--lambda-exploit 2`, `--set lambdas.exploit=2`) changes those
        # only: the others stay the game's. An unknown game is left to `_game_defaults`.
        game = info.data.get("game")
        if not (isinstance(value, dict) and isinstance(game, str)):
            return value
        try:
            defaults = get_game(game).defaults["lambdas"]
        except SepoError:  # an unknown game: `_game_defaults` says so
            return value
        return {**defaults, **value}

    @model_validator(mode="after")
    def _game_defaults(self) -> SEPOConfig:
        game = get_game(self.game)  # unknown game: UnknownNameError listing the games
        stage2 = game.defaults.get("sepo", {})
        # object.__setattr__: filling defaults must not re-enter validate_assignment.
        if self.lambdas is None:
            object.__setattr__(self, "lambdas", Lambdas(**game.defaults["lambdas"]))
        if self.lr is None:
            object.__setattr__(self, "lr", float(stage2.get("lr", 1e-5)))
        if self.beta is None:
            object.__setattr__(self, "beta", float(stage2.get("beta", 0.1)))
        if self.normalize is None:
            object.__setattr__(self, "normalize", _game_normalize(stage2, self.game))
        if self.oracle_every is None:
            every = stage2.get("oracle_every", DEFAULT_ORACLE_EVERY)
            if isinstance(every, bool) or not isinstance(every, int) or every < 1:
                raise SepoError(f"{self.game}.toml: [sepo] oracle_every must be an integer "
                                f"≥ 1, got {every!r}")
            object.__setattr__(self, "oracle_every", every)
        has_oracle = (capability(game, ExactSolvable) is not None
                      or has_exploiter_library(game))
        if self.oracle is None:
            auto = (has_oracle and not self.reward_only and self.credit != "aux"
                    and not self.exploit_best_response)
            object.__setattr__(self, "oracle", auto)
        elif self.oracle and self.reward_only:
            # The baseline stays plain GRPO (its λ = 0 would make the groups' rewards
            # constant anyway): its rollouts are the fixed pools' only.
            object.__setattr__(self, "oracle", False)
        elif self.oracle:
            if not has_oracle:
                raise SepoError(f"{self.game} has no oracle: neither exact best responses nor "
                                "candidate exploiters ([oracle] in its toml)")
            if self.credit == "aux":
                raise SepoError("the oracle's exploiters are trained on (credit per-pool or "
                                "constant), not played as auxiliaries: credit=aux")
            if self.exploit_best_response:
                raise SepoError("exploit_best_response is the earlier form of Kuhn's oracle; "
                                "use one of them (oracle, or exploit_best_response with "
                                "oracle=false)")
        # Kuhn's default (its toml): exploitability descent on the expected exact credit,
        # which met the Kuhn targets where the sampled forms did not (docs/RESULTS.md, "Kuhn").
        if self.exact_credit is None:
            auto = _toml_flag(stage2, "exact_credit", self.game)
            object.__setattr__(self, "exact_credit", auto and bool(self.oracle)
                               and self.credit == "per-pool")
        if self.exact_expected is None:
            auto = _toml_flag(stage2, "exact_expected", self.game)
            object.__setattr__(self, "exact_expected", auto and bool(self.exact_credit))
        if self.exploit_best_response and capability(game, ExactSolvable) is None:
            raise SepoError(f"exploit_best_response needs an exact best response, which sepo "
                            f"computes for {', '.join(games_with(ExactSolvable))} only, not "
                            f"{self.game}")
        if self.exploit_best_response and self.credit == "aux":
            raise SepoError("exploit_best_response trains on the best response's episodes "
                            "(credit per-pool or constant), not as an auxiliary: credit=aux")
        if self.exact_credit:
            if capability(game, ExactCredit) is None:
                raise SepoError(f"exact_credit needs exact action values, which sepo computes "
                                f"for {', '.join(games_with(ExactCredit))} only, not "
                                f"{self.game}")
            if not self.oracle or self.credit != "per-pool":
                raise SepoError("exact_credit credits the oracle's best-response groups: it "
                                "needs oracle=true and credit=per-pool (not reward_only)")
        if self.exact_expected and not self.exact_credit:
            raise SepoError("exact_expected replaces exact_credit's sampled decisions by their "
                            "expectation: it needs exact_credit=true")
        if self.budget_exact and not ("exploit" in self.budgets and self.oracle
                                      and capability(game, ExactSolvable) is not None):
            raise SepoError(f"budget_exact bounds an exploit budget by the exact "
                            f"exploitability of the policy the oracle reads: it needs a budget "
                            f"on exploit and the oracle of a game with exact best responses "
                            f"({', '.join(games_with(ExactSolvable))}), not {self.game} with "
                            f"budgets {sorted(self.budgets) or 'none'}")
        if self.budgets and self.reward_only:
            raise SepoError("budgets steer the λ of the safety penalties; the reward-only "
                            "baseline has none (drop --reward-only or the budgets)")
        if "collusion" in self.budgets and not game.pools["collusive"]:
            raise SepoError(f"a collusion budget needs a collusive pool; {self.game} has none")
        inert = sorted(set(self.budgets) & {"exploit", "collusion"})
        if inert and self.advantage == "group" and self.credit == "per-pool":
            # Their pools' rewards are the penalty alone, and a group's own std divides λ out.
            raise SepoError(f"a budget on {' and '.join(inert)} moves its λ, which "
                            "advantage=group divides out of that pool's advantages; use "
                            "advantage=batch (or none) with budgets")
        if self.lambda_min >= self.lambda_max:
            raise SepoError(f"lambda_min ({self.lambda_min:g}) must be below lambda_max "
                            f"({self.lambda_max:g})")
        if self.credit == "aux" and not (game.pools["exploit"] or game.pools["collusive"]):
            raise SepoError(f"credit=aux needs an exploit or collusive pool; {self.game} has "
                            "neither")
        return self

    def with_agent_settings(self) -> SEPOConfig:
        """This config with `reasoning` and `max_new_tokens` filled in from the starting
        checkpoint's `sepo_agent.json` (an SFT checkpoint says whether it was trained to
        reason, and how long its answers run), else the agent's defaults. A value of the file
        out of range is a one-line `SepoError` naming the file and the field."""

        from sepo.agents.lm import AGENT_SETTINGS_FILE, read_agent_settings

        settings = read_agent_settings(self.model)
        reasoning = self.reasoning
        if reasoning is None:
            reasoning = bool(settings.get("reasoning", True))
        max_new_tokens = self.max_new_tokens
        if max_new_tokens is None:
            max_new_tokens = settings.get("max_new_tokens")
        # Assigning validates (validate_assignment); `model_copy(update=...)` would not.
        config = self.model_copy()
        try:
            config.reasoning = reasoning
            config.max_new_tokens = max_new_tokens
        except ValidationError as err:
            raise SepoError(f"{Path(self.model) / AGENT_SETTINGS_FILE}: "
                            f"{describe_validation_error(err)}") from None
        return config

    # ------------------------------------------------------------------ derived values
    @property
    def train_lambdas(self) -> Lambdas:
        """The λ used in the training reward: zero for the reward-only baseline.

        `lambdas` itself stays the game's, because the in-training evaluation always measures
        Safety at the game's λ, whatever the training reward.
        """
        assert self.lambdas is not None
        return Lambdas.zero() if self.reward_only else self.lambdas

    @property
    def condition(self) -> str:
        """A short name of the training condition, e.g. 'sepo', 'reward-only', 'sepo-aux'."""
        if self.reward_only:
            return "reward-only"
        name = "sepo" if self.credit == "per-pool" else f"sepo-{self.credit}"
        if self.budgets:
            name += "-budget"
        if self.advantage != DEFAULT_ADVANTAGE:
            name += f"-{self.advantage}-scale"
        default = _game_normalize(get_game(self.game).defaults.get("sepo", {}), self.game)
        return name if self.normalize == default else f"{name}-{self.normalize}-norm"

    # Fields that may differ between a run and its resumption (everything else must match,
    # otherwise the resumed run is not the run that was checkpointed). `share_prompt_prefix`
    # changes how the loss is computed, not what: like `device`, only float rounding.
    RESUMABLE_CHANGES: ClassVar[tuple[str, ...]] = ("steps", "resume", "device", "out",
                                                    "share_prompt_prefix", "report_to")

    #: Fields whose default depends on the version that saved a run: a resumed run that does
    #: not set them takes the saved value (`resumed_from`).
    SAVED_DEFAULTS: ClassVar[tuple[str, ...]] = ("oracle", "exact_credit", "exact_expected",
                                                 "normalize")

    def best_checkpoint_limits(self) -> dict[str, float]:
        """The in-training evaluation's columns (metrics.csv) a checkpoint must keep within
        their limits to be the best one (`sepo.train.sepo.eligible_for_best`): the
        parse-failure rate and each budgeted metric, an exact exploit budget's as the exact
        exploitability."""
        limits = {"eval_parse_failure_rate": self.best_max_parse_failures}
        for name, budget in self.budgets.items():
            exact = name == "exploit" and self.budget_exact
            limits["eval_exact_exploitability" if exact else f"eval_{name}"] = budget
        return limits

    def best_checkpoint_rule(self) -> str:
        """`best_checkpoint_limits` in words, for the messages of a run without a best one."""
        return "a finite Safety and " + ", ".join(
            f"{column} ≤ {limit:g}" for column, limit in self.best_checkpoint_limits().items())

    def resumed_from(self, saved: SEPOConfig) -> SEPOConfig:
        """This config with the saved run's value of each `SAVED_DEFAULTS` field it left
        unset: a run from before the oracle resumes without it."""
        unset = {k: getattr(saved, k) for k in self.SAVED_DEFAULTS
                 if k not in self.model_fields_set and getattr(saved, k) != getattr(self, k)}
        return self.model_copy(update=unset) if unset else self

    def check_resumable_from(self, saved: SEPOConfig) -> None:
        """Raise a clear error when `saved` (the run's config.json) is not this run's config."""
        mine = self.model_dump(mode="json", exclude=set(self.RESUMABLE_CHANGES))
        theirs = saved.model_dump(mode="json", exclude=set(self.RESUMABLE_CHANGES))
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        if diff:
            changes = ", ".join(f"{k}: {theirs.get(k)!r} -> {mine[k]!r}" for k in diff)
            raise SepoError(f"cannot resume {self.out}: the config differs from the saved one "
                            f"({changes}); only {', '.join(self.RESUMABLE_CHANGES)} may change")


def load_config(path: str | Path) -> SEPOConfig:
    """A config saved by a run (RUN_DIR/config.json or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.exists():
        raise SepoError(f"no SEPO config at {path}")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SepoError(f"{path} is not a SEPO config ({err})") from None
    # A run saved before `advantage` existed scaled per group, and one saved before the
    # oracle (or exact credit) had none: resuming it must not switch.
    if isinstance(saved, dict):
        saved.setdefault("advantage", "group")
        saved.setdefault("oracle", False)
        saved.setdefault("exact_credit", False)
        saved.setdefault("exact_expected", False)
    return SEPOConfig.model_validate(saved)


def _toml_flag(stage2: dict[str, Any], key: str, game: str) -> bool:
    """A true/false default of the game's `[sepo]` table (absent: false)."""
    value = stage2.get(key, False)
    if not isinstance(value, bool):
        raise SepoError(f"{game}.toml: [sepo] {key} must be true or false, got {value!r}")
    return value


def _game_normalize(stage2: dict[str, Any], game: str) -> str:
    """The game's `[sepo] normalize` (absent: per-round)."""
    value = stage2.get("normalize", "per-round")
    if value not in NORMALIZATIONS:
        raise SepoError(f"{game}.toml: [sepo] normalize must be one of "
                        f"{', '.join(NORMALIZATIONS)}; got {value!r}")
    return str(value)
