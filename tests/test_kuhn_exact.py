"""Exact Kuhn analysis: the key mapping to OpenSpiel, exploitability references, best
responses, and agreement with the engine's simulated play."""

from __future__ import annotations

import itertools
import statistics
from typing import Any

import pyspiel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sepo.engine import StrategyPlayer, play
from sepo.errors import SepoError, UnknownNameError
from sepo.games import get_game
from sepo.games.base import AGENT
from sepo.games.kuhn import CARDS, POLICY_KEYS, KuhnPolicy, hand_payoffs, nash_policy
from sepo.kuhn_exact import (
    OPENER_KEYS,
    SECOND_KEYS,
    BestResponse,
    best_response_policy,
    expected_value,
    exploitability,
    key_of_infostate,
    openspiel_infostate,
    per_hand_value,
    policy_of,
)

GAME = get_game("kuhn")
TABLES: dict[str, KuhnPolicy] = {name: s.policy() for name, s in GAME.strategies.items()}


def exact_ev(opener: KuhnPolicy, second: KuhnPolicy) -> float:
    """Opener's expected payoff per hand, enumerated by hand from our own rules: an independent
    check of OpenSpiel and of the key mapping."""

    def value(cards: tuple[str, str], history: str) -> float:
        # Seat 0 opens here; `history` in p/b/c/f letters.
        if history in ("pp", "bc", "bf", "pbc", "pbf"):
            return hand_payoffs(cards, AGENT, history)[AGENT]
        to_move = len(history) % 2
        table = opener if to_move == 0 else second
        key = cards[to_move] + history.replace("c", "b")
        p = table[key]
        facing = history.endswith("b")
        aggressive, passive = ("c", "f") if facing else ("b", "p")
        return p * value(cards, history + aggressive) + (1 - p) * value(cards, history + passive)

    deals = list(itertools.permutations(CARDS, 2))
    return sum(value((a, b), "") for a, b in deals) / len(deals)


# ------------------------------------------------------------------ key mapping
@pytest.mark.parametrize("key", POLICY_KEYS)
def test_keys_map_to_openspiel_information_states(key: str) -> None:
    game = pyspiel.load_game("kuhn_poker")
    card, history = CARDS.index(key[0]), key[1:]
    player = 0 if key in OPENER_KEYS else 1
    state = game.new_initial_state()
    other = next(c for c in range(3) if c != card)
    # OpenSpiel deals player 0's card first.
    for dealt in ((card, other) if player == 0 else (other, card)):
        state.apply_action(dealt)
    for letter in history:
        state.apply_action({"p": 0, "b": 1}[letter])
    assert state.current_player() == player
    assert state.information_state_string(player) == openspiel_infostate(key)
    assert key_of_infostate(openspiel_infostate(key)) == key
    # Action 1 is the aggressive move: Bet, which OpenSpiel also uses for a call.
    assert state.action_to_string(player, 1) == "Bet"


def test_opener_and_second_keys_partition_the_twelve() -> None:
    assert set(OPENER_KEYS) | set(SECOND_KEYS) == set(POLICY_KEYS)
    assert len(OPENER_KEYS) == len(SECOND_KEYS) == 6
    assert openspiel_infostate("Qpb") == "1pb" and openspiel_infostate("Kb") == "2b"
    with pytest.raises(UnknownNameError):
        openspiel_infostate("Qbb")
    with pytest.raises(UnknownNameError):
        key_of_infostate("3p")


# ------------------------------------------------------------------ exploitability
@pytest.mark.parametrize(("name", "reference"), [
    ("Nash", 0.0), ("AlwaysBet", 1 / 3), ("TightPassive", 1 / 4), ("LooseAggressive", 1 / 6),
    ("AlwaysPass", 1.0),
])
def test_exploitability_references(name: str, reference: float) -> None:
    assert exploitability(TABLES[name]) == pytest.approx(reference, abs=1e-9)


@pytest.mark.parametrize("alpha", [0.0, 0.05, 1 / 9, 1 / 6, 0.25, 1 / 3])
def test_nash_family_is_unexploitable_with_the_game_value(alpha: float) -> None:
    policy = nash_policy(alpha)
    assert exploitability(policy) == pytest.approx(0.0, abs=1e-9)
    assert expected_value(policy, policy) == pytest.approx(-1 / 18, abs=1e-12)
    assert exact_ev(policy, policy) == pytest.approx(-1 / 18, abs=1e-12)


@pytest.mark.parametrize(("key", "wrong"), [
    ("Qpb", 1 / 3),  # the paper's "Nash" called a check-raise with Q at 1/3; equilibrium: 2/3
    ("Qb", 2 / 3), ("Jp", 0.0), ("Kb", 0.9), ("Qp", 0.2), ("Jpb", 0.1),
])
def test_any_deviation_at_a_live_information_set_is_exploitable(key: str, wrong: float) -> None:
    assert exploitability({**nash_policy(), key: wrong}) > 1e-3


def test_exploitability_validates_its_policy() -> None:
    with pytest.raises(SepoError, match="lacks information sets"):
        exploitability({"J": 0.5})


# ------------------------------------------------------------------ expected values
def test_expected_value_hand_worked() -> None:
    # AlwaysBet opens against Nash's second player (calls K always, Q with 1/3, never J).
    # Per deal (opener, second): JQ 1/3·(-2) + 2/3·1 = 0; JK -2; QJ +1; QK -2; KJ +1;
    # KQ 1/3·2 + 2/3·1 = 4/3. Mean: (-2/3)/6 = -1/9.
    assert expected_value(TABLES["AlwaysBet"], TABLES["Nash"]) == pytest.approx(-1 / 9)
    assert expected_value(TABLES["AlwaysBet"], TABLES["AlwaysBet"]) == pytest.approx(0.0)
    # AlwaysPass against AlwaysBet's second player: it bets after every check, the opener folds.
    assert expected_value(TABLES["AlwaysPass"], TABLES["AlwaysBet"]) == pytest.approx(-1.0)


@pytest.mark.parametrize(("a", "b"), list(itertools.product(sorted(TABLES), repeat=2))[::7])
def test_expected_value_agrees_with_enumeration(a: str, b: str) -> None:
    assert expected_value(TABLES[a], TABLES[b]) == pytest.approx(exact_ev(TABLES[a], TABLES[b]),
                                                                 abs=1e-12)


# ------------------------------------------------------------------ best response
@pytest.mark.parametrize("name", sorted(TABLES))
def test_best_response_achieves_the_exploitability(name: str) -> None:
    policy = TABLES[name]
    br = best_response_policy(policy)
    assert set(br.values()) <= {0.0, 1.0}
    assert br == best_response_policy(policy)  # deterministic
    # What the responder gains per hand in the repeated game is the exploitability, exactly.
    assert per_hand_value(br, policy) == pytest.approx(exploitability(policy), abs=1e-12)


@settings(max_examples=15, deadline=None)
@given(probs=st.lists(st.sampled_from([0.0, 0.25, 0.5, 2 / 3, 1.0]), min_size=12,
                      max_size=12))
def test_best_response_beats_every_pure_strategy(probs: list[float]) -> None:
    policy = dict(zip(POLICY_KEYS, probs, strict=True))
    br = best_response_policy(policy)
    best_open = exact_ev(br, policy)
    best_second = -exact_ev(policy, br)
    for bits in itertools.product((0.0, 1.0), repeat=6):
        pure = {**dict(zip(OPENER_KEYS, bits, strict=True)),
                **dict(zip(SECOND_KEYS, bits, strict=True))}
        assert exact_ev(pure, policy) <= best_open + 1e-12
        assert -exact_ev(policy, pure) <= best_second + 1e-12
    assert (best_open + best_second) / 2 == pytest.approx(exploitability(policy), abs=1e-9)


def test_best_response_strategy_and_policy_of() -> None:
    target = {**nash_policy(), "Qb": 1.0}
    exploiter = BestResponse(target)
    assert exploiter.name == "BestResponse"
    assert exploiter.policy() == best_response_policy(target)
    assert policy_of(StrategyPlayer(exploiter)) == exploiter.policy()
    assert policy_of(GAME.strategies["Nash"]) == nash_policy()
    assert policy_of(StrategyPlayer(GAME.strategies["TightPassive"])) == TABLES["TightPassive"]

    class Reader:
        name = "lm"

        def tabular_policy(self, game: Any) -> dict[str, float]:
            assert game.name == "kuhn"
            return dict.fromkeys(POLICY_KEYS, 0.5)

    assert policy_of(Reader()) == TABLES["RandomLegal"]
    assert policy_of(StrategyPlayer(get_game("ipd").strategies["TitForTat"])) is None
    assert policy_of(object()) is None


# ------------------------------------------------------------------ simulation
def _per_hand_mean_and_se(agent: object, opponent: object, episodes: int) -> tuple[float, float]:
    records = play(GAME, agent, [opponent], range(episodes))
    # Episodes are independent; hands within one are too (cards and draws are fresh per hand).
    means = [rec.mean(AGENT) for rec in records]
    return statistics.fmean(means), statistics.stdev(means) / len(means) ** 0.5


def test_simulated_play_matches_the_exact_value() -> None:
    agent, opponent = GAME.strategies["AlwaysBet"], GAME.strategies["Nash"]
    exact = per_hand_value(TABLES["AlwaysBet"], TABLES["Nash"])
    assert exact == pytest.approx((-1 / 9 - expected_value(TABLES["Nash"],
                                                           TABLES["AlwaysBet"])) / 2)
    mean, se = _per_hand_mean_and_se(agent, opponent, 1500)
    assert abs(mean - exact) < 4 * se


def test_best_response_exploits_the_agent_in_play() -> None:
    target = TABLES["LooseAggressive"]
    mean, se = _per_hand_mean_and_se(GAME.strategies["LooseAggressive"], BestResponse(target),
                                     1500)
    # The agent loses the exploitability, 1/6 per hand, in expectation.
    assert abs(mean - (-exploitability(target))) < 4 * se
