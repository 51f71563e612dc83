"""`evaluate`: one batch, common random numbers, the SPEC §6 report, Kuhn exactness."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest

from sepo.engine import Decision, DecisionRequest
from sepo.errors import SepoError, UnknownNameError
from sepo.evaluation import evaluate, evaluation_seed
from sepo.games import get_game
from sepo.metrics import METRIC_NAMES
from sepo.sft.data import DemonstratorMixture

SPEC_KEYS = {"game", "agent", "episodes", "pay_per_round", "exploit", "collusion",
             "externality", "safety", "nra", "robust", "exploit_heldout", "parse_failure_rate",
             "per_opponent", "ci95"}


class BatchCounter:
    """An agent that plays a fixed action, counts its calls, and marks every other decision
    as a parse failure (as an LM agent's fallback would)."""

    name = "BatchCounter"

    def __init__(self, action: str) -> None:
        self.action = action
        self.calls: list[int] = []

    def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        self.calls.append(len(requests))
        return [Decision(self.action, text="?", parse_failed=i % 2 == 0)
                for i, _ in enumerate(requests)]


def test_ipd_report_has_every_spec_key_and_hand_worked_values() -> None:
    report = evaluate("ipd", "TitForTat", episodes=10, n_boot=100)
    data = json.loads(report.to_json())
    assert set(data) >= SPEC_KEYS
    assert set(data["ci95"]) == set(METRIC_NAMES)
    assert data["exploit"] == 0.3125 and data["ci95"]["exploit"] == [0.3125, 0.3125]
    assert data["collusion"] == 0.0
    assert "exact_exploitability" not in data  # Kuhn only
    ipd = get_game("ipd")
    union = list(dict.fromkeys(n for pool in ipd.pools.values() for n in pool))
    assert list(data["per_opponent"]) == union
    tft = data["per_opponent"]["AlwaysDefect"]
    assert tft["pools"] == ["exploit"] and tft["episodes"] == 10
    assert (tft["agent_pay_per_round"], tft["opponent_pay_per_round"]) == (0.875, 1.5)
    for o in data["per_opponent"].values():
        lo, hi = o["ci95"]["agent_pay_per_round"]
        assert lo <= o["agent_pay_per_round"] <= hi


def test_one_batch_common_seeds_and_parse_failures() -> None:
    agent = BatchCounter("COOPERATE")
    report = evaluate("ipd", agent, episodes=3, seeds=2, n_boot=50)
    opponents = len(report.metrics.per_opponent)
    # One call per round, holding every episode of every opponent.
    assert agent.calls == [opponents * 3 * 2] * 8
    # Every opponent meets the same evaluation seeds (common random numbers).
    seeds_by_opp: dict[str, list[int]] = {}
    for rec in report.records:
        seeds_by_opp.setdefault(rec.opponent, []).append(rec.seed)
    expected = [evaluation_seed(k, i) for k in (0, 1) for i in range(3)]
    assert all(s == expected for s in seeds_by_opp.values())
    assert len(set(expected)) == 6 and not set(expected) & set(range(1000))
    assert report["parse_failure_rate"] == 0.5
    # AlwaysCooperate-like play has no collusion and is exploited by AlwaysDefect (gap 5).
    assert report["collusion"] == 0.0
    assert report.metrics.per_opponent["AlwaysDefect"].gap == 5.0


def test_several_seeds_report_per_seed_values_and_an_across_seed_interval() -> None:
    report = evaluate("ipd", "Mixed", episodes=5, seeds=3, seed=7, n_boot=50)
    data = report.to_dict()
    assert data["seeds"] == 3 and len(data["per_seed"]) == 3
    assert {r.tags["seed_index"] for r in report.records} == {7, 8, 9}
    mean_u = sum(s["pay_per_round"] for s in data["per_seed"]) / 3
    # Equal episodes per seed: the pooled value is the mean of the per-seed values.
    assert data["pay_per_round"] == pytest.approx(mean_u, abs=1e-12)
    lo, hi = data["ci95_across_seeds"]["pay_per_round"]
    assert lo < mean_u < hi


def test_same_arguments_same_report() -> None:
    a = evaluate("ipd", "Mixed", episodes=6, n_boot=100, seed=1).to_dict()
    b = evaluate("ipd", "Mixed", episodes=6, n_boot=100, seed=1).to_dict()
    c = evaluate("ipd", "Mixed", episodes=6, n_boot=100, seed=2).to_dict()
    assert a == b
    assert a["pay_per_round"] != c["pay_per_round"]


def test_an_opponent_in_two_pools_is_played_once_and_counts_in_both() -> None:
    report = evaluate("kuhn", "TightPassive", episodes=4, n_boot=50)
    counts = Counter(r.opponent for r in report.records)
    assert counts["Nash"] == 4
    assert report.metrics.per_opponent["Nash"].pools == ("train", "exploit")
    nash_gap = report.metrics.per_opponent["Nash"].gap
    bet_gap = report.metrics.per_opponent["AlwaysBet"].gap
    assert report["exploit"] == pytest.approx((nash_gap + bet_gap) / 2)


@pytest.mark.parametrize(("agent", "exact"), [("Nash", 0.0), ("AlwaysBet", 1 / 3),
                                              ("TightPassive", 1 / 4),
                                              ("LooseAggressive", 1 / 6)])
def test_kuhn_exact_exploitability_and_best_response(agent: str, exact: float) -> None:
    report = evaluate("kuhn", agent, episodes=30, n_boot=200)
    data = report.to_dict()
    assert data["exact_exploitability"] == pytest.approx(exact, abs=1e-9)
    assert data["ci95"]["exact_exploitability"] == [data["exact_exploitability"]] * 2
    best = report.metrics.per_opponent["BestResponse"]
    assert best.pools == ("heldout",)
    # The best responder takes `exact` per hand in expectation: the sampled figure agrees.
    lo, hi = best.ci95["agent_pay_per_round"]
    assert lo <= -exact <= hi


class FirstLegal:
    """A Kuhn player with no readable policy: it takes the first legal move."""

    name = "FirstLegal"

    def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        return [Decision(r.game.legal_actions(r.state, r.seat)[0]) for r in requests]


def test_kuhn_agent_without_a_policy_gets_no_exact_figure() -> None:
    data = evaluate("kuhn", FirstLegal(), episodes=2, n_boot=20).to_dict()
    assert data["exact_exploitability"] is None
    assert data["ci95"]["exact_exploitability"] == [None, None]
    assert "BestResponse" not in data["per_opponent"]
    assert data["robust"] is not None


def test_partial_roles_leave_unplayed_metrics_null() -> None:
    data = evaluate("ipd", "TitForTat", episodes=2, n_boot=20,
                    roles=("train", "exploit")).to_dict()
    assert data["collusion"] is None and data["robust"] is None
    assert data["ci95"]["robust"] == [None, None]
    assert data["safety"] is None  # it needs the collusion rate
    assert data["exploit"] == 0.3125 and data["pay_per_round"] > 2.5
    assert data["externality"] is not None
    assert set(data["pools"]) == {"train", "exploit"}


def test_progress_reaches_the_total() -> None:
    seen: list[tuple[int, int]] = []
    evaluate("ipd", "TitForTat", episodes=2, n_boot=10, progress=lambda d, t: seen.append((d, t)))
    done = [d for d, _ in seen]
    assert done == sorted(done) and seen[-1][0] == seen[-1][1] == 12 * 2 * 8


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(UnknownNameError, match="unknown ipd strategy 'Tit'"):
        evaluate("ipd", "Tit")
    with pytest.raises(UnknownNameError, match="unknown game"):
        evaluate("chess", "TitForTat")
    with pytest.raises(UnknownNameError, match="unknown pool"):
        evaluate("ipd", "TitForTat", roles=("training",))
    with pytest.raises(SepoError, match="at least 1"):
        evaluate("ipd", "TitForTat", episodes=0)
    with pytest.raises(UnknownNameError, match="unknown lambda"):
        evaluate("ipd", "TitForTat", episodes=1, lambdas={"x": 1.0})


def test_pooled_intervals_are_as_wide_as_the_spread_of_independent_evaluations() -> None:
    """Calibration: across disjoint evaluations of one agent, the spread of the pooled Pay/r
    matches the width its bootstrap interval claims. Every opponent plays the same episode
    seeds, so the bootstrap must resample seeds jointly; resampling each opponent's episodes on
    its own made bargaining's intervals 0.6 of the spread's width (0.56 over 400 evaluations,
    coverage 0.77); now 0.99."""
    game = get_game("bargaining")
    estimates, half_widths = [], []
    for k in range(120):
        metrics = evaluate(game, DemonstratorMixture(game), episodes=30, seed=1000 + 7919 * k,
                           n_boot=400).metrics
        lo, hi = metrics.ci95["pay_per_round"]
        estimates.append(metrics.values["pay_per_round"])
        half_widths.append((hi - lo) / 2)
    ratio = (np.mean(half_widths) / 1.96) / np.std(estimates, ddof=1)
    assert 0.8 < ratio < 1.25, ratio
