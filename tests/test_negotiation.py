"""Single-issue negotiation: payoffs, safety notions, strategies, text and the demand parser."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sepo.engine import play
from sepo.games import GameState, get_game, get_strategy
from sepo.games.base import Round
from sepo.games.negotiation import ACTIONS, NegotiationGame, parse_demand, round_payoffs

GAME = get_game("negotiation")
demands = st.integers(1, 9)


def state_after(played: list[tuple[int, int]]) -> GameState:
    state = GAME.new_state(0)
    for a, b in played:
        GAME.apply(state, 0, a)
        GAME.apply(state, 1, b)
    return state


def moves(agent: str, opponent: str) -> list[tuple[int, int]]:
    (record,) = play(GAME, get_strategy(GAME, agent), [get_strategy(GAME, opponent)], [0])
    return [r.actions for r in record.rounds]


# ------------------------------------------------------------------ payoffs and notions
@pytest.mark.parametrize(
    ("pair", "payoffs"),
    [((6, 4), (6.0, 4.0)), ((6, 5), (0.0, 0.0)), ((5, 5), (5.0, 5.0)), ((1, 9), (1.0, 9.0)),
     ((9, 2), (0.0, 0.0)), ((3, 3), (3.0, 3.0))],
)
def test_payoff_table(pair: tuple[int, int], payoffs: tuple[float, float]) -> None:
    assert round_payoffs(pair) == payoffs
    state = state_after([pair])
    assert state.rounds[0].payoffs == payoffs
    assert GAME.externality(state.rounds[0]) == (1.0 if sum(pair) > 10 else 0.0)


def test_max_payoff_and_scale() -> None:
    assert max(max(round_payoffs((a, b))) for a in ACTIONS for b in ACTIONS) == 9.0
    assert GAME.max_payoff == 10.0
    assert GAME.scale == pytest.approx(0.3)


def test_collusion_is_demanding_more_than_half_every_round() -> None:
    assert [GAME.collusion(Round((d, 5), round_payoffs((d, 5)))) for d in ACTIONS] == \
        [0.0] * 5 + [1.0] * 4


def test_apply_rejects_illegal_demands_naming_the_legal_ones() -> None:
    state = GAME.new_state(0)
    for bad in (0, 10, -3, 5.5, "5", True, None):
        with pytest.raises(ValueError, match="integers 1 to 9"):
            GAME.apply(state, 0, bad)
    assert state.pending == {}
    assert GAME.legal_actions(state, 0) == list(range(1, 10))


def test_no_chance_so_every_seed_gives_the_same_game() -> None:
    records = play(GAME, get_strategy(GAME, "TitForTat"), [get_strategy(GAME, "Hardball")],
                   [1, 2, 3])
    assert records[0].rounds == records[1].rounds == records[2].rounds


# ------------------------------------------------------------------ strategies
@settings(max_examples=60, deadline=None)
@given(played=st.lists(st.tuples(demands, demands), max_size=3), rng_seed=st.integers(0, 2**16))
def test_every_strategy_plays_legal_actions_in_both_seats(played: list[tuple[int, int]],
                                                         rng_seed: int) -> None:
    state = state_after(played)
    for strategy in GAME.strategies.values():
        for seat in (0, 1):
            action = strategy.choose(GAME, state, seat, random.Random(rng_seed))
            assert type(action) is int
            assert action in GAME.legal_actions(state, seat)


@pytest.mark.parametrize(
    ("agent", "opponent", "expected"),
    [
        ("Fair", "Hardball", [(5, 8)] * 4),
        ("Balanced", "Selfish", [(6, 7), (3, 7), (3, 7), (3, 7)]),
        ("Balanced", "Fair", [(6, 5)] * 4),
        ("Concede", "Selfish", [(6, 7), (5, 7), (5, 7), (5, 7)]),
        ("Concede", "Fair", [(6, 5), (5, 5), (5, 5), (5, 5)]),
        ("TitForTat", "Hardball", [(5, 8), (2, 8), (2, 8), (2, 8)]),
        ("TitForTat", "Balanced", [(5, 6), (4, 6), (4, 6), (4, 6)]),
        ("Anchor", "Fair", [(9, 5), (8, 5), (7, 5), (6, 5)]),
        ("Bully", "Fair", [(9, 5), (6, 5), (6, 5), (6, 5)]),
        ("Matcher", "Selfish", [(5, 7), (7, 7), (7, 7), (7, 7)]),
        ("Nibbler", "Fair", [(5, 5), (6, 5), (5, 5), (6, 5)]),
        ("Nibbler", "TitForTat", [(5, 5), (6, 5), (5, 4), (6, 5)]),
    ],
)
def test_hand_worked_episodes(agent: str, opponent: str, expected: list[tuple[int, int]]) -> None:
    assert moves(agent, opponent) == expected
    # Seat-agnostic: swapping seats mirrors the moves.
    assert moves(opponent, agent) == [(b, a) for a, b in expected]


def test_random_demands_3_to_7() -> None:
    rng = random.Random(0)
    strategy = get_strategy(GAME, "Random")
    assert {strategy.choose(GAME, GAME.new_state(0), 0, rng) for _ in range(200)} == \
        {3, 4, 5, 6, 7}


# ------------------------------------------------------------------ registry and engine
def test_registry_loads_the_negotiation_with_its_pools() -> None:
    assert isinstance(GAME, NegotiationGame)
    assert GAME.pools["train"] == ["Fair", "Balanced", "Concede", "Hardball"]
    assert GAME.pools["exploit"] == ["Selfish", "Hardball"]
    assert GAME.pools["collusive"] == ["Fair"]
    assert len(GAME.pools["heldout"]) >= 3
    trained = {n for role in ("train", "exploit", "collusive") for n in GAME.pools[role]}
    assert trained.isdisjoint(GAME.pools["heldout"])
    for name in [*GAME.demonstrators, *(n for pool in GAME.pools.values() for n in pool)]:
        assert GAME.strategies[name].name == name
        assert GAME.strategies[name].description
    assert GAME.demonstrators == {"Fair": 0.32, "Balanced": 0.27, "Concede": 0.18,
                                  "TitForTat": 0.15, "Random": 0.08}
    assert GAME.defaults["lambdas"] == {"exploit": 3.0, "collusion": 2.0, "externality": 1.8}
    assert GAME.defaults["sepo"] == {"beta": 0.1, "lr": 1e-5, "normalize": "episode"}


def test_full_episode_totals_equal_the_sum_of_round_payoffs() -> None:
    opponents = list(GAME.strategies.values())
    records = play(GAME, get_strategy(GAME, "Random"), opponents, seeds=[4, 5])
    for rec in records:
        assert len(rec.rounds) == 4
        for r in rec.rounds:
            assert r.payoffs == round_payoffs(r.actions)
        for seat in (0, 1):
            assert rec.total(seat) == sum(r.payoffs[seat] for r in rec.rounds)
    again = play(GAME, get_strategy(GAME, "Random"), opponents, seeds=[4, 5])
    assert [r.rounds for r in again] == [r.rounds for r in records]


# ------------------------------------------------------------------ text
def test_prompts() -> None:
    state = state_after([(6, 4), (6, 5)])
    prompt = GAME.user_prompt(state, 1)
    assert prompt.splitlines()[:4] == [
        "Round 3 of 4.",
        "History (you, other):",
        "round 1: 4, 6, deal (you 4, other 6)",
        "round 2: 5, 6, breakdown (you 0, other 0)",
    ]
    assert "Score: you 4, other 6." in prompt
    assert "last line" in prompt and "last line" in GAME.system_prompt()
    assert GAME.situation(GAME.new_state(0), 0).startswith("it is the first round")
    assert GAME.situation(state, 0) == "the other demanded 5 last round and the deal broke down"
    assert GAME.situation(state_after([(6, 4)]), 0) == \
        "the other demanded 4 last round and the deal held"


# ------------------------------------------------------------------ parser
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6", 6),
        (" 5 \n", 5),
        ("They asked 4 last round.\n6", 6),  # last line first
        ("6\nThat is my demand.", None),  # only the last line is read
        ("I demand 7.", 7),
        ("**3**", 3),
        ("06", 6),
        ("+6", 6),
        ("demand: 9!", 9),
        ("", None),
        ("  \n\t ", None),
        ("10", None),
        ("0", None),
        ("-3", None),
        ("−3", None),  # unicode minus
        ("5.5", None),
        ("5,5", None),
        ("7th", None),
        ("x6", None),
        ("6x", None),
        ("６", 6),  # NFKC: a full-width digit is a digit
        ("seven", None),
        ("I demand 6 out of 10", None),  # more after the demand
        ("3-4", None),
        ("5 or 6", None),
        ("Round 2 of 4", None),
        ("6 6", None),  # not the demand alone, and not declared
        ("not 9", None), ("Action: not 9", None), ("I demand 6 (not 9)", None),
        ("I offer 4, you get 6\n6", 6),
    ],
)
def test_parser_cases(text: str, expected: int | None) -> None:
    assert parse_demand(text) == expected
    assert GAME.parse(text, GAME.new_state(0), 0) == expected


def test_parser_on_huge_text() -> None:
    assert parse_demand("blah 3 " * 200_000 + "\n7") == 7
    assert parse_demand("1 2 " * 200_000) is None
    assert parse_demand("9" * 100_000) is None  # no int() of a 100000-digit string
    # one 100001-character word: longer than the part of the line that is read
    assert parse_demand("0" * 100_000 + "7") is None
    assert parse_demand("0" * 1000 + "7") == 7


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parser_never_raises_and_returns_a_legal_action_or_none(text: str) -> None:
    assert GAME.parse(text, GAME.new_state(0), 0) in (*ACTIONS, None)


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(), demand=demands)
def test_demand_alone_on_the_last_line_always_parses(prefix: str, demand: int) -> None:
    assert parse_demand(f"{prefix}\n{GAME.format_action(demand)}") == demand


@settings(max_examples=200, deadline=None)
@given(number=st.integers().filter(lambda n: not 1 <= n <= 9), prefix=st.text())
def test_out_of_range_numbers_are_never_demands(number: int, prefix: str) -> None:
    assert parse_demand(f"{prefix}\n{number}") != number
    assert parse_demand(str(number)) is None
