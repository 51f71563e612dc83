"""Safety budgets: a budgeted penalty weight λ becomes a Lagrange multiplier.

For a budget `b` on a metric m (exploit e, collusion c or externality x, measured on each
step's own rollouts as `sepo.metrics` defines them), training maximises reward subject to
m ≤ b. The multiplier follows projected dual ascent on log λ, as Safe RLHF's PPO-Lagrangian
does (https://github.com/PKU-Alignment/safe-rlhf, `ppo_lag`):

    log λ ← clip(log λ + η · k · (m̄ − b), log λ_min, log λ_max)

where m̄ is the mean of the last `window` steps' measured values and k puts the excess in
reward units (the game's scale s for exploit, whose penalty is λe·s·e; 1 for c and x, rates in
[0, 1]), so one η suits every game. λ rises while the measured
metric is over budget and falls when it is under. The log parameterisation keeps λ positive
and makes the step multiplicative (a 0.1 excess moves λ by the same factor whether λ is 0.1 or
10). Updates start after `warmup` steps: the first steps' values say more about the starting
checkpoint than about the policy the multiplier is steering.

This module is pure: the trainer hands it each step's measured values and reads λ back; its
state is plain numbers, saved in every checkpoint so that a resumed run follows the same λ
path as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from sepo.errors import SepoError


@dataclass(slots=True)
class BudgetSettings:
    """How the multipliers move (the `budget_*` and `lambda_max` fields of `SEPOConfig`)."""

    budgets: Mapping[str, float]
    #: k per metric: what turns its excess into reward units (missing: 1).
    units: Mapping[str, float] = field(default_factory=dict)
    lr: float = 0.5
    window: int = 5
    warmup: int = 2
    lambda_min: float = 1e-3
    lambda_max: float = 100.0


@dataclass(slots=True)
class SafetyBudgets:
    """The multipliers of the budgeted metrics and the recent measurements they follow."""

    settings: BudgetSettings
    log_lambda: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def start(cls, settings: BudgetSettings, initial: Mapping[str, float]) -> SafetyBudgets:
        """Multipliers starting at `initial` (the run's fixed λ; a zero one starts at 1)."""
        log_lambda = {}
        for name in settings.budgets:
            value = initial.get(name, 0.0) or 1.0
            value = min(max(value, settings.lambda_min), settings.lambda_max)
            log_lambda[name] = math.log(value)
        return cls(settings, log_lambda, {name: [] for name in settings.budgets})

    def lambdas(self, fixed: Mapping[str, float]) -> dict[str, float]:
        """The λ of every penalty: the multiplier where budgeted, else `fixed`'s."""
        return {name: (math.exp(self.log_lambda[name]) if name in self.log_lambda else value)
                for name, value in fixed.items()}

    def update(self, step: int, measured: Mapping[str, float]) -> None:
        """Record step `step`'s measured values and, after the warm-up, take one dual step.
        A value that was not measured this step (NaN: e.g. no round counted for collusion)
        leaves its window and its multiplier as they are."""
        s = self.settings
        for name, budget in s.budgets.items():
            value = measured.get(name, math.nan)
            if not math.isfinite(value):
                continue
            window = self.history[name]
            window.append(float(value))
            del window[:-s.window]
            if step <= s.warmup:
                continue
            excess = (sum(window) / len(window) - budget) * s.units.get(name, 1.0)
            self.log_lambda[name] = min(max(self.log_lambda[name] + s.lr * excess,
                                            math.log(s.lambda_min)), math.log(s.lambda_max))

    # ------------------------------------------------------------------ checkpoint state
    def state(self) -> dict[str, dict[str, float] | dict[str, list[float]]]:
        return {"log_lambda": dict(self.log_lambda),
                "history": {k: list(v) for k, v in self.history.items()}}

    def load_state(self, state: Mapping[str, object]) -> None:
        log_lambda, history = state.get("log_lambda"), state.get("history")
        if not (isinstance(log_lambda, dict) and isinstance(history, dict)
                and set(log_lambda) == set(self.settings.budgets) == set(history)):
            raise SepoError("the checkpoint's budget state does not match this run's budgets "
                            f"({', '.join(sorted(self.settings.budgets)) or 'none'})")
        self.log_lambda = {k: float(v) for k, v in log_lambda.items()}
        self.history = {k: [float(x) for x in v] for k, v in history.items()}
