"""Expected exact credit (`exact_expected`, docs/method.md §5.7.2): how often play reaches each
Kuhn information set, worked by hand and counted in simulated hands; the loss term's gradient
is the sampled exact credit's expectation; the trainer swaps one for the other."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sepo.agents import LMTrace
from sepo.agents.lm import load_lm_agent
from sepo.engine import AgentDecision, EpisodeRecord
from sepo.errors import SepoError
from sepo.games import get_game
from sepo.games.base import Round
from sepo.games.kuhn import (
    AGENT,
    CALL,
    CARDS,
    OPENER_HISTORIES,
    PASS,
    POLICY_KEYS,
    TERMINAL_HISTORIES,
    best_response_policy,
    decision_reach,
    hand_payoffs,
    mover,
)
from sepo.train import sepo as trainer
from sepo.train.config import SEPOConfig, load_config
from sepo.train.sepo import ExpectedCredit, compute_advantages, exact_advantages, expected_credit

HALF = dict.fromkeys(POLICY_KEYS, 0.5)
ALWAYS_BET = dict.fromkeys(POLICY_KEYS, 1.0)


def _random_table(seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return dict(zip(POLICY_KEYS, rng.uniform(0.1, 0.9, 12).tolist(), strict=True))


def test_reach_worked_by_hand() -> None:
    # Both play 1/2 everywhere. Opening (half the hands, the card a third): 1/6 per card; the
    # opener's second decision needs a pass and a bet: 1/6 · 1/4; second to act, after the
    # opener's pass or bet: 1/6 · 1/2.
    reach = decision_reach(HALF, HALF)
    for card in CARDS:
        assert reach[card] == pytest.approx(1 / 6)
        assert reach[card + "pb"] == pytest.approx(1 / 24)
        assert reach[card + "p"] == reach[card + "b"] == pytest.approx(1 / 12)
    # The sum is the expected number of agent decisions per hand: (1 + 1/4 + 1) / 2.
    assert sum(reach.values()) == pytest.approx(1.125)
    # Against an opponent that always bets, the agent never sees a pass as second player;
    # after its own pass (probability 1 − p(J) with J) it always faces the bet.
    policy = dict(HALF, J=0.2)
    reach = decision_reach(policy, ALWAYS_BET)
    assert reach["Jp"] == reach["Qp"] == 0.0
    assert reach["Jb"] == pytest.approx(1 / 6)
    assert reach["Jpb"] == pytest.approx(0.8 / 6)


def test_reach_is_the_frequency_of_decisions_in_play() -> None:
    """Simulated hands (openers alternating, as in an episode) make decisions at each set as
    often as `decision_reach` says, within 4 standard errors."""
    policy, opponent = _random_table(3), _random_table(4)
    rng = random.Random(0)
    hands = 60_000
    counts = dict.fromkeys(POLICY_KEYS, 0)
    for i in range(hands):
        cards = tuple(rng.sample(CARDS, 2))
        opener, history = i % 2, ""
        while history not in TERMINAL_HISTORIES:
            seat = mover(opener, len(history))
            key = cards[seat] + history
            table = policy if seat == AGENT else opponent
            if seat == AGENT:
                counts[key] += 1
            aggressive = rng.random() < table[key]
            history += ("c" if aggressive else "f") if history.endswith("b") else (
                "b" if aggressive else "p")
    reach = decision_reach(policy, opponent)
    for key in POLICY_KEYS:
        p = reach[key]
        assert counts[key] / hands == pytest.approx(p, abs=4 * (p * (1 - p) / hands) ** 0.5)
        assert (key[1:] in OPENER_HISTORIES) == (len(key) in (1, 3))


def test_the_terms_gradient_is_the_sampled_credits_expectation() -> None:
    """∂/∂(log-odds at I) of the term is −n·q(I)·p(1 − p)·(Â(I, scored) − Â(I, other)): the
    negative of n times E[Â·∂ log π / ∂ log-odds] over decisions drawn as play draws them."""
    kuhn = get_game("kuhn")
    policy = _random_table(5)
    opponent = best_response_policy(policy)
    margins = kuhn.action_advantages(policy, opponent)
    reach = kuhn.decision_reach(policy, opponent)
    q = {k: v / sum(reach.values()) for k, v in reach.items()}
    decisions = kuhn.policy_decisions()
    n, scale = 7, 0.3
    a_scored = np.array([margins[d.key][d.action] for d in decisions])
    a_other = np.array([next(v for a, v in margins[d.key].items() if a != d.action)
                        for d in decisions])
    weights = np.array([n * q[d.key] * scale for d in decisions])
    term = ExpectedCredit(tuple(d.key for d in decisions), weights * a_scored,
                          weights * a_other, n)
    p = np.array([policy[d.key] for d in decisions])
    log_odds = torch.tensor(np.log(p / (1 - p)), dtype=torch.float64, requires_grad=True)
    value = term.loss(log_odds)
    assert float(value) == pytest.approx(0.0, abs=1e-12)  # Σ_a π·Â = 0 at the policy
    value.backward()
    assert log_odds.grad is not None
    # Sampled: a decision at I takes the scored action with probability p, and ∂ log π /
    # ∂ log-odds is 1 − p for it and −p for the other action.
    expectation = weights * (p * a_scored * (1 - p) + (1 - p) * a_other * (-p))
    np.testing.assert_allclose(log_odds.grad.numpy(), -expectation, atol=1e-12)


def _trace(fallback: bool = False) -> LMTrace:
    return LMTrace(prompt_ids=[1], completion_ids=[2], logprobs=[-0.5], temperature=0.8,
                   fallback=fallback)


def _hand(cards: tuple[str, str], first: int, history: str) -> Round:
    return Round(((), ()), hand_payoffs(cards, first, history),
                 {"cards": cards, "first": first, "history": history})


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_the_term_takes_the_groups_decisions_and_scale(scale: str) -> None:
    """n counts the oracle group's trained decisions (not a fallback's), and its values keep
    the factor `compute_advantages` gave the group's sampled values."""
    kuhn = get_game("kuhn")
    policy = dict(HALF, Q=0.25, Qpb=0.5, Kb=0.9)
    rounds = [_hand(("Q", "J"), 0, "pbc"), _hand(("K", "J"), 1, "bc")]
    decisions = [AgentDecision(0, PASS, PASS, False, _trace()),
                 AgentDecision(0, CALL, CALL, False, _trace(fallback=True)),
                 AgentDecision(1, CALL, CALL, False, _trace())]
    train = EpisodeRecord("kuhn", "a", "Nash", 0, rounds, decisions,
                          tags={"pool": "train", "group": 0, "rollout": 0})
    oracle = EpisodeRecord("kuhn", "a", "Oracle1", 0, rounds, decisions,
                           tags={"pool": "exploit", "group": 1, "rollout": 0})
    records, tables, weight = [train, oracle], {1: ALWAYS_BET}, 0.75
    raw = exact_advantages(kuhn, records, tables, policy, weight)
    scaled = compute_advantages([np.array([1.0, 2.0]), np.zeros(2)], [0, 1], scale=scale,
                                exact=raw)
    factor = float(scaled[1][0] / raw[1][0])
    term = expected_credit(kuhn, records, tables, policy, raw, scaled, weight)
    assert term.decisions == 2  # the fallback's CALL is not trained on
    margins = kuhn.action_advantages(policy, ALWAYS_BET)
    reach = kuhn.decision_reach(policy, ALWAYS_BET)
    for i, key in enumerate(term.keys):
        q = reach[key] / sum(reach.values())
        aggressive = CALL if key[1:] in ("b", "pb") else "BET"
        assert term.scored[i] == pytest.approx(2 * q * weight * factor * margins[key][aggressive])


def test_exact_expected_needs_exact_credit() -> None:
    with pytest.raises(SepoError, match="exact_credit=true"):
        SEPOConfig(game="kuhn", model="tiny", out="r", exact_credit=False, exact_expected=True)


def _flags(**fields: Any) -> tuple[bool | None, bool | None]:
    config = SEPOConfig(game=fields.pop("game", "kuhn"), model="tiny", out="r", **fields)
    return config.exact_credit, config.exact_expected


def test_kuhns_sepo_defaults_to_expected_exact_credit(tmp_path: Path) -> None:
    """kuhn.toml's [sepo] turns both on where the oracle is; the baselines and the other games
    get neither; a run saved before the fields existed resumes without them."""
    assert _flags() == (True, True)
    assert _flags(exact_expected=False) == (True, False)
    assert _flags(exact_credit=False) == (False, False)
    assert _flags(reward_only=True) == (False, False)
    assert _flags(oracle=False) == (False, False)
    assert _flags(credit="aux") == (False, False)
    assert _flags(game="ipd") == (False, False)
    saved = SEPOConfig(game="kuhn", model="tiny", out=tmp_path).model_dump(mode="json")
    del saved["exact_credit"], saved["exact_expected"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    old = load_config(tmp_path)
    assert (old.exact_credit, old.exact_expected) == (False, False)
    resumed = SEPOConfig(game="kuhn", model="tiny", out=tmp_path).resumed_from(old)
    assert (resumed.exact_credit, resumed.exact_expected) == (False, False)


def test_the_log_odds_are_the_tabular_policy_with_a_gradient(tiny_lm_path: Path) -> None:
    kuhn = get_game("kuhn")
    agent = load_lm_agent(str(tiny_lm_path), temperature=0.8, device="cpu")
    table = agent.tabular_policy(kuhn)
    keys, log_odds = agent.policy_log_odds(kuhn, grad=True)
    assert keys == list(table)
    np.testing.assert_allclose(torch.sigmoid(log_odds).detach().numpy(),
                               [table[k] for k in keys], rtol=1e-12)
    log_odds.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.model.parameters())


@pytest.mark.slow
def test_a_kuhn_run_trains_the_oracle_group_through_the_term(
        tiny_lm_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One step: the oracle group's decisions leave the loss's samples, the term is built from
    them (n = their count) and its loss reaches the optimiser."""
    kuhn = get_game("kuhn")
    monkeypatch.setitem(kuhn.pools, "train", ["Nash"])
    monkeypatch.setitem(kuhn.pools, "exploit", ["AlwaysBet"])
    # The untrained tiny model names no move: read every text as the first legal one, so that
    # its decisions are trained on rather than the fallback's.
    monkeypatch.setattr(kuhn, "parse", lambda text, state, seat: kuhn.legal_actions(state, seat)[0])
    terms: list[ExpectedCredit] = []
    losses: list[float] = []
    real_expected, real_loss = trainer.expected_credit, ExpectedCredit.loss
    batches: list[list[Any]] = []
    real_optimise = trainer.optimise

    def expected_spy(*args: Any) -> ExpectedCredit:
        terms.append(real_expected(*args))
        return terms[-1]

    def loss_spy(self: ExpectedCredit, log_odds: torch.Tensor) -> torch.Tensor:
        out = real_loss(self, log_odds)
        losses.append(float(out))
        return out

    def optimise_spy(policy: Any, samples: Any, *args: Any) -> Any:
        batches.append(list(samples))
        return real_optimise(policy, samples, *args)

    monkeypatch.setattr(trainer, "expected_credit", expected_spy)
    monkeypatch.setattr(ExpectedCredit, "loss", loss_spy)
    monkeypatch.setattr(trainer, "optimise", optimise_spy)
    config = SEPOConfig(game="kuhn", model=str(tiny_lm_path), out=tmp_path / "run", steps=1,
                        group_size=2, checkpoint_every=1, eval_episodes=1, eval_bootstrap=10,
                        max_new_tokens=6, reasoning=False, device="cpu", oracle_top=1,
                        exact_credit=True, exact_expected=True)
    trainer.train_sepo(config, progress=False)
    (term,), (samples,) = terms, batches
    assert term.decisions > 0 and len(losses) == 1
    # Σ_a π·Â = 0 at the policy the term was built on, which is the weights it is taken at.
    assert losses[0] == pytest.approx(0.0, abs=1e-9)
    assert {s.role for s in samples} <= {"train", "exploit"}
    # The step's trained decisions (logged over every group) are the loss's samples, which
    # leave out the oracle group's, plus the decisions the term stands for.
    row = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header, values = row[0].split(","), row[1].split(",")
    assert int(float(values[header.index("trained_decisions")])) == len(samples) + term.decisions
