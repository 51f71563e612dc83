"""Safety budgets: the dual ascent of a budgeted λ, the metrics it follows, its settings."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from sepo.engine import EpisodeRecord
from sepo.errors import SepoError, UnknownNameError
from sepo.games import get_game
from sepo.games.base import Round
from sepo.metrics import role_metrics
from sepo.train.budgets import BudgetSettings, SafetyBudgets
from sepo.train.config import SEPOConfig


def scripted(budget: float = 0.3, **settings: float) -> SafetyBudgets:
    return SafetyBudgets.start(BudgetSettings({"exploit": budget}, **settings),
                               {"exploit": 1.5, "collusion": 0.0, "externality": 0.0})


def test_multiplier_rises_while_over_budget_and_falls_while_under() -> None:
    budgets = scripted(lr=0.5, window=1, warmup=0)
    fixed = {"exploit": 1.5, "collusion": 0.7, "externality": 0.0}
    path = [budgets.lambdas(fixed)["exploit"]]
    # A scripted policy: exploitable (0.8) for 4 steps, then safe (0.1) for 4.
    for step, value in enumerate([0.8] * 4 + [0.1] * 4, start=1):
        budgets.update(step, {"exploit": value})
        path.append(budgets.lambdas(fixed)["exploit"])
    rising, falling = path[:5], path[4:]
    assert all(b > a for a, b in itertools.pairwise(rising))
    assert all(b < a for a, b in itertools.pairwise(falling))
    # Exactly: each step multiplies λ by exp(0.5 × (value − 0.3)).
    assert path[1] == pytest.approx(1.5 * math.exp(0.5 * 0.5))
    assert path[8] == pytest.approx(1.5 * math.exp(0.5 * (4 * 0.5 - 4 * 0.2)))
    # Penalties without a budget keep their fixed λ.
    assert budgets.lambdas(fixed)["collusion"] == 0.7


def test_window_warmup_bounds_and_unmeasured_steps() -> None:
    budgets = scripted(lr=1.0, window=2, warmup=2, lambda_max=4.0)
    budgets.update(1, {"exploit": 5.0})
    budgets.update(2, {"exploit": 5.0})
    assert budgets.lambdas({"exploit": 0.0})["exploit"] == pytest.approx(1.5)  # warm-up
    budgets.update(3, {"exploit": 1.3})  # window (5.0, 1.3): mean 3.15, excess 2.85
    assert budgets.lambdas({"exploit": 0.0})["exploit"] == pytest.approx(4.0)  # clipped
    budgets.update(4, {"exploit": math.nan})  # not measured: nothing moves
    assert budgets.history["exploit"] == [5.0, 1.3]
    low = scripted(budget=10.0, lr=100.0, window=1, warmup=0, lambda_min=0.01)
    low.update(1, {"exploit": 0.0})
    assert low.lambdas({"exploit": 0.0})["exploit"] == pytest.approx(0.01)


def test_state_round_trips_and_a_mismatch_is_refused() -> None:
    budgets = scripted(window=3, warmup=0)
    for step in range(1, 5):
        budgets.update(step, {"exploit": 0.1 * step})
    again = scripted(window=3, warmup=0)
    again.load_state(budgets.state())
    assert again.log_lambda == budgets.log_lambda and again.history == budgets.history
    other = SafetyBudgets.start(BudgetSettings({"collusion": 0.1}), {"collusion": 0.0})
    assert other.lambdas({"collusion": 0.0})["collusion"] == 1.0  # a zero λ starts at 1
    with pytest.raises(SepoError, match="budget state does not match"):
        other.load_state(budgets.state())


def test_role_metrics_of_a_hand_built_step() -> None:
    ipd = get_game("ipd")
    c, d = "COOPERATE", "DEFECT"
    pay = {(c, c): (3.0, 3.0), (d, d): (1.0, 1.0), (d, c): (5.0, 0.0), (c, d): (0.0, 5.0)}

    def record(pool: str, opponent: str, moves: list[tuple[str, str]]) -> EpisodeRecord:
        return EpisodeRecord("ipd", "a", opponent, 1, [Round(m, pay[m]) for m in moves],
                             tags={"pool": pool})

    records = [
        # Exploit pool: opponent A out-earns the agent by 5 then 0 per round (mean 2.5);
        # B by 0. e = mean over opponents = (2.5 + 0) / 2.
        record("exploit", "A", [(c, d), (d, d)]),
        record("exploit", "B", [(c, c), (c, c)]),
        # The same opponent name in the train pool is another opponent here.
        record("train", "A", [(d, c), (d, d)]),
        record("collusive", "P", [(c, c), (d, d)]),
    ]
    measured = role_metrics(ipd, records)
    assert measured["exploit"] == pytest.approx(1.25)
    collusion = [ipd.collusion(r) for r in records[3].rounds]
    assert measured["collusion"] == pytest.approx(sum(collusion) / 2)
    rounds = [r for rec in records[:3] for r in rec.rounds]
    assert measured["externality"] == pytest.approx(
        sum(ipd.externality(r) for r in rounds) / len(rounds))
    # No collusive episode this step: collusion was not measured.
    assert math.isnan(role_metrics(ipd, records[:3])["collusion"])


def test_budget_settings_are_checked() -> None:
    ok = SEPOConfig(game="ipd", model="x", out="r", budgets={"exploit": 0.3, "collusion": 0.2},
                    advantage="batch")
    assert ok.condition == "sepo-budget-batch-scale"
    # Under advantage=group, λe and λc divide out of their pools' advantages: such a budget
    # would move a number that changes nothing. The externality's λ weighs the train pool.
    with pytest.raises(SepoError, match=r"budget on collusion and exploit.*advantage=batch"):
        SEPOConfig(game="ipd", model="x", out="r", budgets={"exploit": 0.3, "collusion": 0.2},
                   advantage="group")
    assert SEPOConfig(game="ipd", model="x", out="r", budgets={"externality": 0.1},
                      advantage="group").budgets == {"externality": 0.1}
    assert SEPOConfig(game="ipd", model="x", out="r", budgets={"exploit": 0.3},
                      advantage="group", credit="aux").budgets == {"exploit": 0.3}
    with pytest.raises(UnknownNameError, match=r"budget 'exploitability'.*collusion, exploit"):
        SEPOConfig(game="ipd", model="x", out="r", budgets={"exploitability": 0.3})
    with pytest.raises(SepoError, match="finite number"):
        SEPOConfig(game="ipd", model="x", out="r", budgets={"exploit": -1})
    with pytest.raises(SepoError, match="reward-only"):
        SEPOConfig(game="ipd", model="x", out="r", budgets={"exploit": 0.3}, reward_only=True)
    with pytest.raises(SepoError, match="collusive pool; kuhn"):
        SEPOConfig(game="kuhn", model="x", out="r", budgets={"collusion": 0.1})
    with pytest.raises(SepoError, match="lambda_min"):
        SEPOConfig(game="kuhn", model="x", out="r", lambda_min=5.0, lambda_max=1.0)


def test_run_gives_budgets_to_sepo_and_not_to_reward_only(tmp_path: Path) -> None:
    from sepo.pipeline import RunConfig

    run = RunConfig(games=["ipd"], out=tmp_path, sepo={"budgets": {"exploit": 0.3},
                                                       "advantage": "batch"})
    sepo = run.sepo_config("ipd", 0, tmp_path / "sft", tmp_path / "s", "sepo")
    baseline = run.sepo_config("ipd", 0, tmp_path / "sft", tmp_path / "r", "reward-only")
    assert sepo.budgets == {"exploit": 0.3} and sepo.condition == "sepo-budget-batch-scale"
    assert baseline.budgets == {} and baseline.reward_only


def test_budget_exact_needs_an_exploit_budget_and_an_exact_oracle() -> None:
    base = dict(model="tiny", out="r", advantage="batch", budget_exact=True)
    with pytest.raises(SepoError, match=r"budget_exact.*kuhn.*not ipd"):
        SEPOConfig(game="ipd", budgets={"exploit": 0.3}, **base)
    with pytest.raises(SepoError, match=r"budget_exact.*budgets none"):
        SEPOConfig(game="kuhn", **base)
    with pytest.raises(SepoError, match="budget_exact"):
        SEPOConfig(game="kuhn", budgets={"exploit": 0.1}, oracle=False, **base)
    assert SEPOConfig(game="kuhn", budgets={"exploit": 0.1}, **base).budget_exact


@pytest.mark.slow
def test_budget_exact_measures_the_read_policys_exact_exploitability(
        tiny_lm_path: Path, tmp_path: Path) -> None:
    """Each step's measured exploit (metrics.csv, the multiplier's input) is the exact
    exploitability of the policy the oracle read that step (oracle.jsonl)."""
    import csv
    import json

    from sepo.games.kuhn import exploitability
    from sepo.train import sepo as trainer

    config = SEPOConfig(game="kuhn", model=str(tiny_lm_path), out=tmp_path / "run", steps=2,
                        group_size=2, checkpoint_every=2, eval_episodes=1, eval_bootstrap=10,
                        max_new_tokens=6, reasoning=False, device="cpu", advantage="batch",
                        budgets={"exploit": 0.05}, budget_exact=True, budget_warmup=0)
    trainer.train_sepo(config, progress=False)
    with open(tmp_path / "run" / "metrics.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    reads = [json.loads(line) for line in
             (tmp_path / "run" / "oracle.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in reads] == [1, 2]
    for row, read in zip(rows, reads, strict=True):
        assert float(row["measured_exploit"]) == pytest.approx(exploitability(read["policy"]),
                                                               abs=1e-12)
    # Over budget from the first step (warm-up 0): λe rose from the toml's 1.5.
    assert float(rows[1]["lambda_exploit"]) > 1.5
