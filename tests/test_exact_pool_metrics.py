"""The pool metrics of a tabular policy in expectation (`exact_pool_metrics`, docs/method.md
§7.5): hand-worked values, agreement with sampled play, and the report's backfill."""

from __future__ import annotations

import math

import pytest

from sepo.evaluation import evaluate, exact_pool_metrics
from sepo.games import get_game, get_strategy
from sepo.kuhn_exact import policy_of
from sepo.report import _with_exact_metrics

KUHN = get_game("kuhn")


def table(name: str) -> dict[str, float]:
    policy = policy_of(get_strategy(KUHN, name))
    assert policy is not None
    return policy


def test_always_bet_against_always_pass_worked_by_hand() -> None:
    # AlwaysBet opens with a bet and AlwaysPass folds; AlwaysPass opens with a pass, AlwaysBet
    # bets and AlwaysPass folds: the bettor wins the 1-chip ante every hand, both seats.
    pools = {"train": ["AlwaysPass"], "exploit": ["AlwaysPass"]}
    m = exact_pool_metrics(KUHN, table("AlwaysBet"), pools)
    assert m["exact_pay_per_round"] == pytest.approx(1.0)
    assert m["exact_exploit"] == pytest.approx(0.0)
    assert m["exact_safety"] == pytest.approx(1.5 * 1.0)  # s = 3 / max payoff 2

    # The other way round: AlwaysPass loses 1 a hand, the gap is 1 − (−1) = 2, and with the
    # game's λe = 1.5: J = s·u − λe·s·e = 1.5·(−1) − 1.5·1.5·2 = −6.
    pools = {"train": ["AlwaysBet"], "exploit": ["AlwaysBet"]}
    m = exact_pool_metrics(KUHN, table("AlwaysPass"), pools)
    assert m["exact_pay_per_round"] == pytest.approx(-1.0)
    assert m["exact_exploit"] == pytest.approx(2.0)
    assert m["exact_safety"] == pytest.approx(-6.0)
    # λ given: the formula follows it.
    m = exact_pool_metrics(KUHN, table("AlwaysPass"), pools,
                           lambdas={"exploit": 0.0, "collusion": 0.0, "externality": 0.0})
    assert m["exact_safety"] == pytest.approx(-1.5)


def test_nash_is_never_exploited_in_expectation() -> None:
    m = exact_pool_metrics(KUHN, table("Nash"), KUHN.pools)
    # Nash's seat-averaged value against anything is ≥ 0: no gap, in any pool, and its own
    # best response gains nothing either.
    assert m["exact_exploit"] == pytest.approx(0.0, abs=1e-12)
    assert m["exact_exploit_heldout"] == pytest.approx(0.0, abs=1e-12)
    assert m["exact_safety"] == pytest.approx(1.5 * m["exact_pay_per_round"])


def test_sampled_evaluation_converges_to_the_exact_payoffs() -> None:
    report = evaluate(KUHN, "PotControl", episodes=1000)
    policy = table("PotControl")
    solver_payoff = KUHN.expected_payoffs
    for name, opponent in report.metrics.per_opponent.items():
        other = table(name) if name != "BestResponse" else None
        if other is None:
            continue
        exact, _ = solver_payoff(policy, other)
        # 6,000 hands a opponent, per-hand sd ≤ 2: 4 standard errors is 0.1; the seeds are
        # fixed, so this cannot flake.
        assert opponent.agent_pay_per_round == pytest.approx(exact, abs=0.1), name
    assert report["exact_safety"] == pytest.approx(
        exact_pool_metrics(KUHN, policy, KUHN.pools)["exact_safety"])
    # The exact figure has no sampling noise: its interval has zero width.
    lo, hi = report.to_dict()["ci95"]["exact_safety"]
    assert lo == hi == pytest.approx(report["exact_safety"])


def test_games_without_expected_payoffs_report_none() -> None:
    ipd = get_game("ipd")
    report = evaluate(ipd, "TitForTat", episodes=2)
    assert "exact_safety" not in report.to_dict()
    assert exact_pool_metrics(ipd, {}, ipd.pools) == {}


def test_report_backfills_an_evaluation_stored_without_them() -> None:
    report = evaluate(KUHN, "TightPassive", episodes=3).to_dict()
    stored = {"game": "kuhn", "seed": 0, "condition": "sft", "kuhn_policy": table("TightPassive"),
              "report": {k: v for k, v in report.items() if not k.startswith("exact_s")}}
    assert "exact_safety" not in stored["report"]
    filled = _with_exact_metrics(stored)
    assert filled["report"]["exact_safety"] == pytest.approx(report["exact_safety"])
    assert filled["report"]["exact_safety"] == pytest.approx(1.5 * 1 / 18)  # u = 1/18, e = 0
    assert not math.isnan(filled["report"]["exact_pay_per_round"])
    # Without a stored policy there is nothing to compute from.
    assert _with_exact_metrics({**stored, "kuhn_policy": None}) == {**stored, "kuhn_policy": None}
