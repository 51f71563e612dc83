"""Exact per-decision credit (`exact_credit`, docs/method.md §5.7.1): Kuhn's action margins
worked by hand, their agreement with OpenSpiel's values and with the policy gradient, and
the trainer's use of them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sepo.agents import LMTrace
from sepo.engine import AgentDecision, EpisodeRecord
from sepo.errors import SepoError
from sepo.games import get_game
from sepo.games.base import Round
from sepo.games.kuhn import (
    BET,
    CALL,
    FOLD,
    OPENER_KEYS,
    PASS,
    POLICY_KEYS,
    action_margins,
    best_response_policy,
    expected_value,
    hand_payoffs,
    nash_policy,
)
from sepo.train import sepo as trainer
from sepo.train.config import SEPOConfig
from sepo.train.sepo import compute_advantages, decision_samples, exact_advantages

ALWAYS_BET = dict.fromkeys(POLICY_KEYS, 1.0)


def _table(**by_key: float) -> dict[str, float]:
    return {k: by_key.get(k, 0.5) for k in POLICY_KEYS}


def test_margins_worked_by_hand() -> None:
    # Agent Q opens; the opponent always bets and calls; the agent calls a check-raise half
    # the time. BET: called by J (+2 each: margin +4) or K (−4): 0. PASS: the opponent bets;
    # against J, call +4 / fold −2 -> 1; against K, call −4 / fold −2 -> −3; mean −1.
    policy = _table(Qpb=0.5)
    margins = action_margins(policy, ALWAYS_BET)
    assert margins["Q"] == pytest.approx({BET: 0.0, PASS: -1.0})
    # Facing a bet with K: calling wins the showdown (+4), folding gives the ante (−2).
    assert margins["Kb"] == pytest.approx({CALL: 4.0, FOLD: -2.0})
    # Q facing a bet from an opener that bets with J only: the bettor holds J.
    bets_j_only = _table(J=1.0, K=0.0)
    assert action_margins(policy, bets_j_only)["Qb"] == pytest.approx({CALL: 4.0, FOLD: -2.0})
    # ... and from one that bets with J and K: half the time it holds K.
    assert action_margins(policy, _table(J=1.0, K=1.0))["Qb"] == pytest.approx(
        {CALL: 0.0, FOLD: -2.0})
    # A set the opponent never lets the agent reach (nobody bets): chance weights alone.
    assert action_margins(policy, _table(J=0.0, K=0.0))["Qb"] == pytest.approx(
        {CALL: 0.0, FOLD: -2.0})


def test_advantages_are_centred_on_the_policys_value() -> None:
    game = get_game("kuhn")
    policy = _table(Q=0.25, Qpb=0.5)
    adv = game.action_advantages(policy, ALWAYS_BET)["Q"]
    # V = 0.25·0 + 0.75·(−1) = −0.75.
    assert adv == pytest.approx({BET: 0.75, PASS: -0.25})
    for key, by_move in game.action_advantages(nash_policy(0.2), ALWAYS_BET).items():
        p = nash_policy(0.2)[key]
        aggressive = CALL if CALL in by_move else BET
        passive = FOLD if aggressive == CALL else PASS
        assert p * by_move[aggressive] + (1 - p) * by_move[passive] == pytest.approx(0.0), key


def test_opening_values_match_openspiel() -> None:
    """The agent's expected payoff as the opener (OpenSpiel's `policy_value`) is the mean over
    its three cards of V(card) / 2 (the margin of a zero-sum hand is twice the payoff)."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        policy = dict(zip(POLICY_KEYS, rng.random(12).tolist(), strict=True))
        opponent = dict(zip(POLICY_KEYS, rng.random(12).tolist(), strict=True))
        margins = action_margins(policy, opponent)
        value = np.mean([policy[c] * margins[c][BET] + (1 - policy[c]) * margins[c][PASS]
                         for c in "JQK"]) / 2
        assert value == pytest.approx(expected_value(policy, opponent), abs=1e-12)


@pytest.mark.parametrize("key", OPENER_KEYS)
def test_advantages_are_the_policy_gradient(key: str) -> None:
    """d E[opener's payoff] / d p(I) = reach(I) · (Q(I, aggressive) − Q(I, passive)) / 2: the
    exact margins are the gradient of the value against a fixed opponent (finite
    differences on OpenSpiel's values). reach(I): chance's 1/3 for the card, times the
    opponent's and the agent's own probabilities of the moves so far."""
    rng = np.random.default_rng(1)
    policy = dict(zip(POLICY_KEYS, rng.uniform(0.1, 0.9, 12).tolist(), strict=True))
    opponent = dict(zip(POLICY_KEYS, rng.uniform(0.1, 0.9, 12).tolist(), strict=True))
    h = 1e-6
    up, down = dict(policy), dict(policy)
    up[key] += h
    down[key] -= h
    numeric = (expected_value(up, opponent) - expected_value(down, opponent)) / (2 * h)
    card, history = key[0], key[1:]
    margins = action_margins(policy, opponent)[key]
    aggressive, passive = (CALL, FOLD) if history else (BET, PASS)
    if history:  # "pb": the agent passed, the opponent bet (its card: either other card)
        reach = (1 - policy[card]) * np.mean([opponent[c + "p"] for c in "JQK" if c != card])
    else:
        reach = 1.0
    exact = reach * (margins[aggressive] - margins[passive]) / 2 / 3
    assert exact == pytest.approx(numeric, abs=1e-7)


def _trace() -> LMTrace:
    return LMTrace(prompt_ids=[1], completion_ids=[2], logprobs=[-0.5], temperature=0.8)


def _hand(cards: tuple[str, str], first: int, history: str) -> Round:
    return Round(((), ()), hand_payoffs(cards, first, history),
                 {"cards": cards, "first": first, "history": history})


def test_trainer_credits_each_decision_exactly() -> None:
    kuhn = get_game("kuhn")
    policy = _table(Q=0.25, Qpb=0.5, Kb=0.9)
    # Hand 0: the agent opens Q and passes, the opponent bets, the agent calls: two decisions.
    # Hand 1: the opponent opens and bets, the agent calls with K.
    rounds = [_hand(("Q", "J"), 0, "pbc"), _hand(("K", "J"), 1, "bc")]
    decisions = [AgentDecision(0, PASS, PASS, False, _trace()),
                 AgentDecision(0, CALL, CALL, False, _trace()),
                 AgentDecision(1, CALL, CALL, False, _trace())]
    exploit = EpisodeRecord("kuhn", "a", "BestResponse", 0, rounds, decisions,
                            tags={"pool": "exploit", "group": 1, "rollout": 0})
    train = EpisodeRecord("kuhn", "a", "Nash", 0, rounds, decisions,
                          tags={"pool": "train", "group": 0, "rollout": 0})
    adv = kuhn.action_advantages(policy, ALWAYS_BET)
    weight = 1.5 * kuhn.scale
    exact = exact_advantages(kuhn, [train, exploit], {1: ALWAYS_BET}, policy, weight)
    assert list(exact) == [1]  # only the group with a table
    want = [weight * adv["Q"][PASS], weight * adv["Qpb"][CALL], weight * adv["Kb"][CALL]]
    np.testing.assert_allclose(exact[1], want)
    # Q, PASS: −0.25 (above); Qpb: J and K both bet, so CALL 0, FOLD −2, V −1: CALL +1;
    # Kb, CALL: 4 − (0.9·4 + 0.1·−2) = 0.6.
    np.testing.assert_allclose(np.asarray(want) / weight, [-0.25, 1.0, 0.6])

    # `none` keeps them; `batch` divides them with the rest by one scale; `group` by their
    # own root mean square. The train record's group has one rollout: 0 advantage.
    per_round = [np.array([1.0, 2.0]), np.zeros(2)]
    groups = [0, 1]
    none = compute_advantages(per_round, groups, scale="none", exact=exact)
    np.testing.assert_allclose(none[1], want)
    np.testing.assert_allclose(none[0], [0.0, 0.0])
    batch = compute_advantages(per_round, groups, scale="batch", exact=exact)
    rms = math.sqrt(float(np.sum(np.square(want))) / 5)  # 2 train cells (0) + 3 decisions
    np.testing.assert_allclose(batch[1], np.asarray(want) / rms)
    group = compute_advantages(per_round, groups, scale="group", exact=exact)
    np.testing.assert_allclose(group[1], np.asarray(want) / math.sqrt(np.mean(np.square(want))))

    samples = decision_samples([train, exploit], none, groups, per_decision=exact.keys())
    assert [s.advantage for s in samples] == [0.0, 0.0, 0.0, *want]


def test_decisions_that_disagree_with_the_rounds_are_refused() -> None:
    kuhn = get_game("kuhn")
    record = EpisodeRecord("kuhn", "a", "o", 0, [_hand(("Q", "J"), 0, "pbc")],
                           [AgentDecision(0, BET, BET, False, _trace())],
                           tags={"pool": "exploit", "group": 0})
    with pytest.raises(SepoError, match="decisions"):
        exact_advantages(kuhn, [record], {0: ALWAYS_BET}, _table(), 1.0)


def test_exact_credit_needs_kuhns_oracle() -> None:
    with pytest.raises(SepoError, match="kuhn"):
        SEPOConfig(game="ipd", model="tiny", out="r", exact_credit=True)
    with pytest.raises(SepoError, match="oracle=true"):
        SEPOConfig(game="kuhn", model="tiny", out="r", exact_credit=True, oracle=False)
    with pytest.raises(SepoError, match="oracle=true"):
        SEPOConfig(game="kuhn", model="tiny", out="r", exact_credit=True, reward_only=True)
    assert SEPOConfig(game="kuhn", model="tiny", out="r", exact_credit=True).oracle


@pytest.mark.slow
def test_a_kuhn_run_credits_the_oracle_groups_decisions_exactly(
        tiny_lm_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring of one step: the oracle group (and only it) is credited against the table of
    the best response to the policy read that step, with weight λe·s, and its decisions enter
    the loss with those advantages (`advantage=none` keeps them as they are)."""
    kuhn = get_game("kuhn")
    monkeypatch.setitem(kuhn.pools, "train", ["Nash"])
    monkeypatch.setitem(kuhn.pools, "exploit", ["AlwaysBet"])
    calls: list[tuple[Any, ...]] = []
    seen: list[list[Any]] = []
    real_exact, real_samples = trainer.exact_advantages, trainer.decision_samples

    def exact_spy(*args: Any) -> dict[int, np.ndarray]:
        out = real_exact(*args)
        calls.append((*args, out))
        return out

    def samples_spy(*args: Any) -> list[Any]:
        seen.append(list(args))
        return real_samples(*args)

    monkeypatch.setattr(trainer, "exact_advantages", exact_spy)
    monkeypatch.setattr(trainer, "decision_samples", samples_spy)
    config = SEPOConfig(game="kuhn", model=str(tiny_lm_path), out=tmp_path / "run", steps=1,
                        group_size=2, checkpoint_every=1, eval_episodes=1, eval_bootstrap=10,
                        max_new_tokens=6, reasoning=False, device="cpu", oracle_top=1,
                        exact_credit=True, exact_expected=False, advantage="none")
    trainer.train_sepo(config, progress=False)

    ((_, records, opponents, policy, weight, out),) = calls
    assert list(opponents) == [2]  # groups: 0 Nash (train), 1 AlwaysBet, 2 the oracle's
    assert opponents[2] == best_response_policy(policy)
    assert weight == pytest.approx(config.train_lambdas.exploit * kuhn.scale)
    assert sorted(out) == [k for k, r in enumerate(records) if r.tags["group"] == 2]
    adv = kuhn.action_advantages(policy, opponents[2])
    for k in sorted(out):
        made = [m for rnd in records[k].rounds for m in kuhn.round_decisions(rnd)]
        np.testing.assert_allclose(out[k], [weight * adv[key][a] for key, a in made])
    # The loss's decisions: the oracle records' advantages are these, one per decision.
    ((sampled, advantages, _, per_decision),) = seen
    assert sampled is records and set(per_decision) == set(out)
    for k, values in out.items():
        np.testing.assert_array_equal(advantages[k], values)
