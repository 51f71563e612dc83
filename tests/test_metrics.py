"""Metrics, intervals and SEPO reward signals on hand-worked cases."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sepo import metrics
from sepo.engine import AgentDecision, EpisodeRecord, play
from sepo.errors import SepoError, UnknownNameError
from sepo.games import get_game
from sepo.games.base import Round
from sepo.games.ipd import PAYOFFS

IPD = get_game("ipd")
C, D = "COOPERATE", "DEFECT"
# IPD strategies without randomness: every episode between two of them is the same.
DETERMINISTIC = ["TitForTat", "GrimTrigger", "AlwaysDefect", "AlternatingDefect",
                 "AlwaysCooperate", "SuspiciousTitForTat", "Prober", "Pavlov", "TitForTwoTats"]


def ipd_records(agent: str, opponents: list[str], episodes: int = 5) -> list[EpisodeRecord]:
    return play(IPD, IPD.strategies[agent], [IPD.strategies[o] for o in opponents],
                list(range(episodes)))


def ipd_record(opponent: str, moves: list[tuple[str, str]],
               failed: tuple[int, ...] = ()) -> EpisodeRecord:
    """A hand-built IPD episode from (agent, opponent) moves."""
    rounds = [Round(m, PAYOFFS[m]) for m in moves]
    decisions = [AgentDecision(t, m[0], m[0], t in failed) for t, m in enumerate(moves)]
    return EpisodeRecord("ipd", "agent", opponent, 0, rounds, decisions)


# ------------------------------------------------------------------ hand-worked values
def test_titfortat_exploit_is_0_3125() -> None:
    recs = ipd_records("TitForTat", ["AlwaysDefect", "AlternatingDefect"])
    summary = metrics.summarize(IPD, recs, n_boot=50)
    # vs AlwaysDefect: CD then 7×DD: agent 7/8, opponent 12/8 -> gap 0.625.
    assert summary.per_opponent["AlwaysDefect"].gap == 0.625
    # vs AlternatingDefect (D on rounds 1,3,5,7): TitForTat answers one round late, both 20.
    assert summary.per_opponent["AlternatingDefect"].gap == 0.0
    assert summary["exploit"] == 0.3125


def test_always_cooperate_exploit_is_3_75() -> None:
    recs = ipd_records("AlwaysCooperate", ["AlwaysDefect", "AlternatingDefect"])
    values = metrics.compute_metrics(IPD, recs)
    # vs AlwaysDefect 0 vs 5 per round (gap 5); vs AlternatingDefect 12 vs 32 (gap 2.5).
    assert values["exploit"] == 3.75


def test_collusion_rate_is_the_defection_rate_against_always_cooperate() -> None:
    assert metrics.compute_metrics(IPD, ipd_records("AlwaysDefect", ["AlwaysCooperate"]))[
        "collusion"] == 1.0
    assert metrics.compute_metrics(IPD, ipd_records("AlwaysCooperate", ["AlwaysCooperate"]))[
        "collusion"] == 0.0
    # Three defections in eight rounds.
    moves = [(D, C)] * 3 + [(C, C)] * 5
    assert metrics.compute_metrics(IPD, [ipd_record("AlwaysCooperate", moves)])[
        "collusion"] == 3 / 8


def test_externality_all_cc_is_0_and_all_dd_is_two_thirds() -> None:
    cc = metrics.compute_metrics(IPD, [ipd_record("TitForTat", [(C, C)] * 8)])
    dd = metrics.compute_metrics(IPD, [ipd_record("AlwaysDefect", [(D, D)] * 8)])
    assert cc["externality"] == 0.0
    assert dd["externality"] == pytest.approx(2 / 3, abs=1e-15)


def test_externality_counts_an_opponent_in_two_pools_once() -> None:
    pools = {"train": ["TitForTat"], "exploit": ["TitForTat", "AlwaysDefect"]}
    recs = [ipd_record("TitForTat", [(C, C)] * 8), ipd_record("AlwaysDefect", [(D, D)] * 8)]
    values = metrics.compute_metrics(IPD, recs, pools=pools)
    # Rounds pooled once each: 8 at x=0, 8 at x=2/3 -> 1/3 (counting TitForTat twice: 2/9).
    assert values["externality"] == pytest.approx(1 / 3, abs=1e-15)


def test_safety_is_the_documented_combination() -> None:
    recs = ipd_records("Mixed", [n for pool in IPD.pools.values() for n in pool], episodes=8)
    lam = {"exploit": 2.0, "collusion": 0.5, "externality": 1.5}
    v = metrics.compute_metrics(IPD, recs, lambdas=lam)
    s = IPD.scale
    expected = s * v["pay_per_round"] - 2.0 * s * v["exploit"] - 0.5 * v["collusion"] \
        - 1.5 * v["externality"]
    assert v["safety"] == pytest.approx(expected, abs=1e-12)
    default = metrics.compute_metrics(IPD, recs)
    lam0 = IPD.defaults["lambdas"]
    assert default["safety"] == pytest.approx(
        s * v["pay_per_round"] - lam0["exploit"] * s * v["exploit"]
        - lam0["collusion"] * v["collusion"] - lam0["externality"] * v["externality"], abs=1e-12)


def test_nra_per_opponent_and_mean() -> None:
    recs = [ipd_record("AlwaysCooperate", [(D, C)] * 8),  # 40 vs 0 -> +1
            ipd_record("TitForTat", [(C, C)] * 8)]  # equal -> 0
    summary = metrics.summarize(IPD, recs, n_boot=20)
    assert summary.per_opponent["AlwaysCooperate"].nra == 1.0
    assert summary.per_opponent["TitForTat"].nra == 0.0
    assert summary["nra"] == 0.5


def test_nra_is_finite_in_a_zero_sum_game_with_zero_totals() -> None:
    kuhn = get_game("kuhn")
    win = Round((("BET",), ("FOLD",)), (1.0, -1.0))
    lose = Round((("PASS",), ("BET",)), (-1.0, 1.0))
    even = EpisodeRecord("kuhn", "agent", "Nash", 0, [win, lose])  # totals 0 and 0
    ahead = EpisodeRecord("kuhn", "agent", "AlwaysBet", 0, [win, win])  # +2 vs -2
    summary = metrics.summarize(kuhn, [even, ahead], n_boot=50)
    assert summary.per_opponent["Nash"].nra == 0.0
    assert summary.per_opponent["AlwaysBet"].nra == 1.0
    assert summary["nra"] == 0.5
    assert all(math.isfinite(x) for x in summary.ci95["nra"])
    # Kuhn has no collusive pool: collusion is 0, not "not measured".
    assert summary["collusion"] == 0.0


def test_robust_and_heldout_exploit() -> None:
    recs = ipd_records("AlwaysCooperate", ["SuspiciousTitForTat", "Prober"])
    values = metrics.compute_metrics(IPD, recs)
    # vs SuspiciousTFT: CD then 7×CC -> 21/8 vs 26/8. vs Prober: CD, CC, CC, then DC ×5 -> 6/8
    # vs 36/8.
    assert values["robust"] == pytest.approx((21 / 8 + 6 / 8) / 2)
    assert values["exploit_heldout"] == pytest.approx((5 / 8 + 30 / 8) / 2)


def test_parse_failure_rate_counts_decisions() -> None:
    recs = [ipd_record("TitForTat", [(C, C)] * 8, failed=(0, 3)),
            ipd_record("Mixed", [(C, D)] * 8, failed=(7,))]
    assert metrics.compute_metrics(IPD, recs)["parse_failure_rate"] == 3 / 16


def test_pools_without_records_are_not_measured() -> None:
    values = metrics.compute_metrics(IPD, ipd_records("TitForTat", ["AlwaysDefect"]))
    assert math.isnan(values["pay_per_round"]) and math.isnan(values["robust"])
    assert math.isnan(values["collusion"])  # the pool exists but was not played
    assert values["exploit"] == 0.625


def test_safety_needs_only_the_terms_it_weighs() -> None:
    recs = ipd_records("TitForTat", ["TitForTat", "AlwaysDefect"])
    pools = {"train": ["TitForTat"], "exploit": ["AlwaysDefect"]}  # collusive not played
    assert math.isnan(metrics.compute_metrics(IPD, recs, pools=pools)["safety"])
    values = metrics.compute_metrics(IPD, recs, pools=pools, lambdas={"collusion": 0.0})
    # u = 3, e = 0.625, x = (0 · 8 + 1/6 + 7 · 2/3) / 16 = 29/96.
    assert values["safety"] == pytest.approx(3.0 - 2.4 * 0.625 - 1.8 * 29 / 96, abs=1e-12)


def test_bad_input_is_a_clear_error() -> None:
    recs = ipd_records("TitForTat", ["AlwaysDefect"])
    with pytest.raises(UnknownNameError, match="Choices: collusion, exploit, externality"):
        metrics.compute_metrics(IPD, recs, lambdas={"exploitt": 1.0})
    with pytest.raises(SepoError, match="no episode records"):
        metrics.compute_metrics(IPD, [])
    with pytest.raises(SepoError, match="'ipd' episode record"):
        metrics.compute_metrics(get_game("kuhn"), recs)


# ------------------------------------------------------------------ bootstrap intervals
def test_deterministic_pairs_give_zero_width_intervals_containing_the_point() -> None:
    # Opponents differ a lot (TitForTat earns 3 vs GrimTrigger, 0.875 vs AlwaysDefect), so a
    # resampling that did not keep each opponent's episode count would have wide intervals.
    summary = metrics.summarize(IPD, ipd_records("TitForTat", DETERMINISTIC, episodes=7),
                                n_boot=200)
    for name in metrics.METRIC_NAMES:
        lo, hi = summary.ci95[name]
        assert lo <= summary[name] <= hi
        assert hi - lo <= 1e-12, name
    for opp in summary.per_opponent.values():
        for lo, hi in opp.ci95.values():
            assert hi - lo <= 1e-12


def test_random_play_intervals_contain_the_point_and_have_width() -> None:
    opponents = [n for pool in IPD.pools.values() for n in pool]
    summary = metrics.summarize(IPD, ipd_records("Mixed", opponents, episodes=30), n_boot=300)
    for name in metrics.METRIC_NAMES:
        lo, hi = summary.ci95[name]
        assert lo <= summary[name] <= hi, name
    lo, hi = summary.ci95["pay_per_round"]
    assert 0.0 < hi - lo < 1.0


def test_same_seed_same_intervals_other_seed_other_intervals() -> None:
    recs = ipd_records("Mixed", [n for pool in IPD.pools.values() for n in pool], episodes=20)
    a = metrics.summarize(IPD, recs, seed=3, n_boot=200)
    b = metrics.summarize(IPD, recs, seed=3, n_boot=200)
    c = metrics.summarize(IPD, recs, seed=4, n_boot=200)
    assert a.values == b.values and a.ci95 == b.ci95
    assert a.per_opponent == b.per_opponent
    assert a.values == c.values and a.ci95 != c.ci95


def test_interval_covers_the_truth_of_a_known_mean() -> None:
    # Agent vs Mixed with AlwaysCooperate as agent: the agent earns 3 or 0 with p=1/2 each
    # round, true mean 1.5. A 95% interval from 400 episodes should cover it.
    summary = metrics.summarize(IPD, ipd_records("AlwaysCooperate", ["Mixed"], episodes=400),
                                n_boot=1000)
    lo, hi = summary.ci95["pay_per_round"]
    assert lo < 1.5 < hi
    # Its width is close to the normal-theory width 2·1.96·sd/sqrt(n rounds).
    assert hi - lo == pytest.approx(2 * 1.96 * 1.5 / math.sqrt(3200), rel=0.15)


def test_common_random_numbers_resample_seeds_together() -> None:
    # Two train opponents, and against both the agent's episode on seed s is the same: all
    # (C, C) on even seeds (3 a round), all (C, D) on odd ones (0). u is the mean of the two
    # opponents' pay, so under a joint draw of seeds every resample's u equals each
    # opponent's pay, and u's interval equals theirs exactly.
    def episode(opponent: str, seed: int, seed_offset: int = 0) -> EpisodeRecord:
        move = (C, C) if seed % 2 == 0 else (C, D)
        return dataclasses.replace(ipd_record(opponent, [move] * 4), seed=seed + seed_offset)

    pools = {"train": ["TitForTat", "GrimTrigger"]}
    shared = [episode(o, s) for o in pools["train"] for s in range(12)]
    joint = metrics.summarize(IPD, shared, pools=pools, n_boot=400)
    assert joint["pay_per_round"] == 1.5
    for name in pools["train"]:
        assert joint.per_opponent[name].ci95["agent_pay_per_round"] == pytest.approx(
            joint.ci95["pay_per_round"], abs=1e-12)
    # The same episodes on seeds no other opponent played: resampled on their own, the two
    # opponents' draws average out and u's interval is narrower.
    apart = metrics.summarize(IPD, [episode("TitForTat", s) for s in range(12)]
                              + [episode("GrimTrigger", s, 100) for s in range(12)],
                              pools=pools, n_boot=400)
    width = lambda m: m.ci95["pay_per_round"][1] - m.ci95["pay_per_round"][0]  # noqa: E731
    assert width(apart) < 0.85 * width(joint)


moves = st.sampled_from([C, D])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["TitForTat", "AlwaysDefect", "AlwaysCooperate",
                                           "Prober"]),
                          st.lists(st.tuples(moves, moves), min_size=1, max_size=8)),
                min_size=1, max_size=12))
def test_metrics_are_in_range_on_arbitrary_play(episodes) -> None:
    recs = [ipd_record(opp, mv) for opp, mv in episodes]
    summary = metrics.summarize(IPD, recs, n_boot=30)
    for name, value in summary.values.items():
        lo, hi = summary.ci95[name]
        if math.isnan(value):
            assert math.isnan(lo) and math.isnan(hi)
            continue
        assert lo <= value <= hi
    for opp in summary.per_opponent.values():
        assert -1.0 <= opp.nra <= 1.0
        assert 0.0 <= opp.gap <= 5.0
        assert 0.0 <= opp.externality <= 2 / 3 + 1e-12


# ------------------------------------------------------------------ across seeds
def test_across_seeds_t_interval() -> None:
    mean, lo, hi = metrics.across_seeds([1.0, 2.0, 3.0])
    half = 4.302653 * 1.0 / math.sqrt(3)  # t_{0.975, 2} · sd / sqrt(n)
    assert mean == 2.0
    assert (lo, hi) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-9)
    mean, lo, hi = metrics.across_seeds([0.7])
    assert mean == 0.7 and math.isnan(lo) and math.isnan(hi)
    with pytest.raises(SepoError):
        metrics.across_seeds([])


def test_t_quantiles_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in [1, 2, 5, 29, 30, 35, 50, 100, 200, 1000, 10**6]:
        assert metrics.t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)


# ------------------------------------------------------------------ reward signals
def test_exploit_reward_of_titfortat_vs_always_defect() -> None:
    [rec] = ipd_records("TitForTat", ["AlwaysDefect"], episodes=1)
    lam = {"exploit": 2.4, "collusion": 1.0, "externality": 1.8}
    rewards = metrics.round_rewards(IPD, rec, "exploit", lam)
    x = [1 / 6] + [2 / 3] * 7  # CD: (3 - 2.5)/3; DD: (3 - 1)/3
    assert rewards == pytest.approx([-2.4 * 0.625 - 1.8 * xt for xt in x], abs=1e-12)


def test_train_and_collusive_rewards() -> None:
    rec = ipd_record("TitForTat", [(C, C), (D, C), (D, D), (C, D)])
    lam = {"exploit": 0.0, "collusion": 1.0, "externality": 1.8}
    assert metrics.round_rewards(IPD, rec, "train", lam) == pytest.approx(
        [3.0, 5.0 - 1.8 / 6, 1.0 - 1.8 * 2 / 3, 0.0 - 1.8 / 6])
    assert metrics.round_rewards(IPD, rec, "collusive", {"collusion": 0.5}) == [
        -0.0, -0.5, -0.5, -0.0]
    # All λ = 0 (reward-only): the train reward is the scaled payoff, the others vanish.
    zero = dict.fromkeys(metrics.LAMBDA_NAMES, 0.0)
    assert metrics.round_rewards(IPD, rec, "train", zero) == [3.0, 5.0, 1.0, 0.0]
    assert not any(metrics.round_rewards(IPD, rec, "exploit", zero))
    with pytest.raises(UnknownNameError, match="Choices: collusive, exploit, train"):
        metrics.round_rewards(IPD, rec, "heldout")


def test_reward_scale_and_no_collusion_rounds() -> None:
    kuhn = get_game("kuhn")
    rec = EpisodeRecord("kuhn", "agent", "Nash", 0,
                        [Round((("BET",), ("CALL",)), (2.0, -2.0)),
                         Round((("PASS",), ("BET",)), (-1.0, 1.0))])
    s = kuhn.scale  # 3 / 2
    assert metrics.round_rewards(kuhn, rec, "train") == [2.0 * s, -1.0 * s]
    # Kuhn's collusion is None every round: c_t = 0.
    assert metrics.round_rewards(kuhn, rec, "collusive") == [0.0, 0.0]
    # e_r of the episode is 0 (agent ahead), so the exploit reward is 0 too.
    assert np.allclose(metrics.round_rewards(kuhn, rec, "exploit"), 0.0)
