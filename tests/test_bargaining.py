"""Multi-issue bargaining: payoffs, chance, safety notions, parser, prompts and strategies."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sepo.engine import play
from sepo.games import get_game
from sepo.games.bargaining import (
    BargainingGame,
    BargainingState,
    Vector,
    fair_leaves,
    is_deal,
    round_payoffs,
    value_vectors,
)
from sepo.games.base import AGENT, OPPONENT, Round

GAME = get_game("bargaining")
COUNTS: Vector = (1, 2, 3)
VALUES: tuple[Vector, Vector] = ((4, 0, 2), (0, 2, 2))  # 4·1 + 0·2 + 2·3 = 10; 0 + 4 + 6 = 10


def fixed_state(counts: Vector = COUNTS,
                values: tuple[Vector, Vector] = VALUES) -> BargainingState:
    state = GAME.new_state(0)
    state.counts, state.values = counts, values
    return state


def play_round(state: BargainingState, agent: Vector, opponent: Vector) -> Round:
    GAME.apply(state, AGENT, agent)
    GAME.apply(state, OPPONENT, opponent)
    return state.rounds[-1]


def choose(name: str, state: BargainingState, seat: int = AGENT) -> Vector:
    return GAME.strategies[name].choose(GAME, state, seat, random.Random(0))


# ------------------------------------------------------------------ payoffs
@pytest.mark.parametrize(("agent", "opponent", "deal", "payoffs"), [
    ((1, 0, 1), (0, 2, 2), True, (6.0, 8.0)),  # fits: 1+0 ≤ 1, 0+2 ≤ 2, 1+2 ≤ 3
    ((1, 0, 3), (0, 2, 0), True, (10.0, 4.0)),  # the whole pool, each takes what it values
    ((0, 0, 0), (1, 2, 3), True, (0.0, 10.0)),
    ((0, 0, 0), (0, 0, 0), True, (0.0, 0.0)),  # a deal worth nothing is still a deal
    ((1, 1, 2), (0, 2, 1), False, (0.0, 0.0)),  # hats 1 + 2 > 2: breakdown
    ((1, 0, 0), (1, 0, 0), False, (0.0, 0.0)),  # the single book twice
    ((0, 2, 2), (0, 0, 2), False, (0.0, 0.0)),  # balls 2 + 2 > 3
])
def test_hand_worked_payoffs(agent: Vector, opponent: Vector, deal: bool,
                             payoffs: tuple[float, float]) -> None:
    state = fixed_state()
    rnd = play_round(state, agent, opponent)
    assert rnd.payoffs == payoffs
    assert rnd.actions == (agent, opponent)
    assert rnd.info == {"counts": COUNTS, "values": VALUES, "deal": deal}
    assert GAME.externality(rnd) == (0.0 if deal else 1.0)


def test_round_payoffs_and_deal_directly() -> None:
    assert is_deal(((1, 1, 1), (0, 1, 2)), COUNTS)
    assert not is_deal(((1, 1, 1), (1, 1, 2)), COUNTS)
    assert round_payoffs(((1, 1, 1), (0, 1, 2)), COUNTS, VALUES) == (6.0, 6.0)


def test_collusion_is_demanding_more_than_a_fair_partner_leaves() -> None:
    assert fair_leaves(COUNTS) == (1, 1, 2)  # FairNeg demands (0, 1, 1)
    state = fixed_state()
    fair = (0, 1, 1)
    assert GAME.collusion(play_round(state, (1, 1, 2), fair)) == 0.0  # all it leaves: a deal
    assert GAME.collusion(play_round(state, (0, 2, 0), fair)) == 1.0  # 2 hats > 1
    assert GAME.collusion(play_round(state, (0, 0, 3), fair)) == 1.0  # 3 balls > 2
    assert GAME.collusion(play_round(state, (0, 0, 0), fair)) == 0.0
    assert state.done


def test_legal_actions_and_illegal_demands() -> None:
    state = fixed_state()
    legal = GAME.legal_actions(state, AGENT)
    assert len(legal) == 2 * 3 * 4 and len(set(legal)) == len(legal)
    assert (1, 2, 3) in legal and (0, 0, 0) in legal and (2, 0, 0) not in legal
    for bad in [(2, 0, 0), (0, 0, -1), (0, 0), [1, 0, 0], (1.0, 0, 0), (True, 0, 0), "1,0,0"]:
        with pytest.raises(ValueError, match="illegal bargaining demand"):
            GAME.apply(state, AGENT, bad)


# ------------------------------------------------------------------ chance
def test_value_vectors_are_all_the_ways_to_be_worth_ten() -> None:
    for counts in itertools.product(range(1, 5), repeat=3):
        brute = [v for v in itertools.product(range(11), repeat=3)
                 if sum(c * x for c, x in zip(counts, v, strict=True)) == 10]
        assert list(value_vectors(counts)) == brute
    assert value_vectors((3, 3, 3)) == () and value_vectors((4, 4, 4)) == ()
    assert (4, 0, 2) in value_vectors((1, 2, 3))


def test_chance_is_reproducible_and_covers_every_valid_pool() -> None:
    a, b = GAME.new_state(11), GAME.new_state(11)
    assert (a.counts, a.values) == (b.counts, b.values)
    seen: Counter[Vector] = Counter()
    for seed in range(3000):
        s = GAME.new_state(seed)
        assert all(1 <= c <= 4 for c in s.counts)
        for values in s.values:
            assert min(values) >= 0
            assert sum(c * v for c, v in zip(s.counts, values, strict=True)) == 10
        seen[s.counts] += 1
    assert set(seen) == {c for c in itertools.product(range(1, 5), repeat=3) if value_vectors(c)}
    assert len(seen) == 62
    # Uniform over the 62 pools: ~48 each; 4 standard deviations is ~28.
    assert all(20 < n < 80 for n in seen.values())


def test_values_are_drawn_independently_per_seat() -> None:
    states = [GAME.new_state(seed) for seed in range(300)]
    assert any(s.values[0] != s.values[1] for s in states)
    assert any(s.values[0] == s.values[1] for s in states)  # same draw is possible too


# ------------------------------------------------------------------ parser
@pytest.mark.parametrize(("text", "expected"), [
    ("[1, 2, 0]", (1, 2, 0)),
    ("(1,2,0)", (1, 2, 0)),
    ("1, 2, 0", (1, 2, 0)),
    ("My demand: 1, 2, 0.", (1, 2, 0)),
    ("[1 2 0]", (1, 2, 0)),
    ("books=1 hats=2 balls=0", (1, 2, 0)),
    ("Books: 1, Hats: 2, Balls: 0", (1, 2, 0)),
    ("book=1, hat=0, ball=3", (1, 0, 3)),
    ("Round 2 of 4: they asked [0, 2, 3].\nI take [1, 0, 0]", (1, 0, 0)),  # last line first
    ("I want the book and the balls; I take [1, 0, 3].", (1, 0, 3)),
    ("[ 1, 0, 3 ]", (1, 0, 3)),
])
def test_parser_accepts_documented_forms(text: str, expected: Vector) -> None:
    assert GAME.parse(text, fixed_state(), AGENT) == expected


@pytest.mark.parametrize("text", [
    "",
    "I take everything",
    "[2, 0, 0]",  # out of range: 2 books, but there is 1
    "[1, 2, 4]",
    "[-1, 2, 0]",
    "[0.5, 1, 1]",
    "[1, 2, 0, 1]",  # four numbers: not a vector
    "[1, 2]",
    "[1, 0, 0] or [0, 1, 0]",  # ambiguous, and again in the whole text
    "I'd take [1, 0, 0]\n[2, 0, 0]",  # the last line's vector is illegal: no guessing earlier
    "I want the book and the balls: [1, 0, 3]\nThat is final.",  # only the last line is read
    "[1, 0, 3] [1, 0, 3]",  # not the vector alone, and not declared
    "[1, 0, 3",  # brackets must match
    "(1, 0, 3]",
    "Action: not [1, 0, 3]",
    "books=1 books=0 hats=1 balls=1",  # one item named twice
    "books=1 hats=2",  # balls missing
    "12, 0, 0",
    "1,2,0x",
    "9" * 5000 + ", 1, 1",  # huge numbers must not crash int()
])
def test_parser_rejects_illegal_or_ambiguous_text(text: str) -> None:
    assert GAME.parse(text, fixed_state(), AGENT) is None


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_parser_never_raises_on_arbitrary_text(text: str) -> None:
    state = fixed_state()
    action = GAME.parse(text, state, AGENT)
    assert action is None or action in GAME.legal_actions(state, AGENT)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="[](), 0123456789-.=:booksthaler\n", max_size=120))
def test_parser_never_raises_on_number_soup(text: str) -> None:
    state = fixed_state()
    action = GAME.parse(text, state, AGENT)
    assert action is None or action in GAME.legal_actions(state, AGENT)


@settings(max_examples=100, deadline=None)
@given(demand=st.tuples(st.integers(0, 1), st.integers(0, 2), st.integers(0, 3)),
       reason=st.text(alphabet=st.characters(blacklist_categories=("N", "Cs")), max_size=80))
def test_parser_reads_the_canonical_form_after_any_reasoning(demand: Vector,
                                                             reason: str) -> None:
    text = f"{reason}\n{GAME.format_action(demand)}"
    assert GAME.parse(text, fixed_state(), AGENT) == demand


# ------------------------------------------------------------------ prompts
def test_prompt_shows_own_values_only_history_and_bounds() -> None:
    state = fixed_state()
    play_round(state, (1, 0, 1), (0, 2, 2))
    play_round(state, (1, 1, 2), (0, 2, 1))
    prompt = GAME.user_prompt(state, AGENT)
    assert "Round 3 of 4." in prompt
    assert "Items in the pool: 1 book, 2 hats and 3 balls." in prompt
    assert "Your values per item: book 4, hat 0, ball 2" in prompt
    assert "hat 2" not in prompt  # the other's values stay private
    assert "round 1: you [1, 0, 1], other [0, 2, 2]: deal (you 6, other 8)" in prompt
    assert "round 2: you [1, 1, 2], other [0, 2, 1]: no deal (you 0, other 0)" in prompt
    assert "Score: you 6, other 8." in prompt
    assert "books 0 to 1, hats 0 to 2, balls 0 to 3" in prompt
    other_view = GAME.user_prompt(state, OPPONENT)
    assert "Your values per item: book 0, hat 2, ball 2" in other_view
    assert "round 1: you [0, 2, 2], other [1, 0, 1]: deal (you 8, other 6)" in other_view
    assert "[books, hats, balls]" in GAME.system_prompt()


def test_situation() -> None:
    state = fixed_state()
    assert GAME.situation(state, AGENT) == (
        "my values are books 4, hats 0, balls 2 for 1 book, 2 hats and 3 balls, "
        "and the other has not demanded yet")
    play_round(state, (1, 0, 1), (0, 2, 2))
    assert GAME.situation(state, AGENT) == (
        "my values are books 4, hats 0, balls 2 and the other demanded [0, 2, 2] last round")
    assert GAME.format_action((1, 0, 1)) == "[1, 0, 1]"


# ------------------------------------------------------------------ strategies
def test_registry_loads_bargaining_with_existing_pool_members() -> None:
    game = get_game("bargaining")
    assert isinstance(game, BargainingGame) and game.max_payoff == 10.0 and game.num_rounds == 4
    assert game.pools["train"] == ["FairNeg", "TitForTatNeg", "ConcedeNeg"]
    assert game.pools["exploit"] == ["GreedyNeg", "HardballNeg"]
    assert game.pools["collusive"] == ["FairNeg"]
    assert game.pools["heldout"]
    for pool in game.pools.values():
        assert all(name in game.strategies for name in pool)
    assert game.demonstrators == {"Proportional": 0.35, "Conservative": 0.25, "Adaptive": 0.25,
                                  "Defensive": 0.15}
    assert game.defaults["lambdas"] == {"exploit": 3.0, "collusion": 2.0, "externality": 1.8}
    assert game.defaults["sepo"] == {"beta": 0.1, "lr": 1e-5, "normalize": "episode"}


@pytest.mark.parametrize("name", sorted(GAME.strategies))
def test_every_strategy_plays_legally_in_both_seats(name: str) -> None:
    strategy, other = GAME.strategies[name], GAME.strategies["RandomNeg"]
    # apply() raises on an illegal demand, so finishing the episodes is the check.
    for rec in play(GAME, strategy, [other], range(30)) + play(GAME, other, [strategy],
                                                               range(30)):
        assert len(rec.rounds) == 4


def test_fixed_strategies() -> None:
    state = fixed_state((2, 3, 4), ((2, 2, 0), (0, 2, 1)))  # 4+6+0 = 10; 0+6+4 = 10
    assert choose("FairNeg", state) == (1, 1, 2)
    assert choose("GreedyNeg", state) == (2, 3, 4)
    assert choose("TitForTatNeg", state) == (1, 2, 2)  # ⌊2·count/3⌋
    assert choose("ConcedeNeg", state) == (2, 3, 4)
    # Values (2, 2, 0): books and hats tie, balls least valued.
    assert choose("HardballNeg", state) == (2, 3, 0)
    assert choose("HardballNeg", state, OPPONENT) == (0, 3, 4)  # values (0, 2, 1)
    assert choose("Conservative", state) == (1, 1, 0)
    assert choose("ValueGrabber", state) == (2, 3, 0)
    # Proportional: count·v/v_max rounded half up, capped at count − ⌊count/2⌋ = (1, 2, 2).
    assert choose("Proportional", state) == (1, 2, 0)
    assert choose("Proportional", state, OPPONENT) == (0, 2, 2)  # balls 4·1/2 = 2
    # Defensive: hats are worth most (3·2 = 6 > 2·2); it keeps the larger half of them.
    assert choose("Defensive", state) == (1, 2, 0)
    assert choose("Anchor", state) == (2, 3, 4)
    assert choose("Mimic", state) == (1, 1, 2)
    assert choose("Adaptive", state) == (1, 1, 2)


def test_history_dependent_strategies() -> None:
    state = fixed_state((2, 3, 4), ((2, 2, 0), (0, 2, 1)))
    play_round(state, (2, 3, 0), (0, 3, 4))  # breakdown on hats
    assert choose("TitForTatNeg", state) == (2, 0, 0)  # count − the other's last
    assert choose("TitForTatNeg", state, OPPONENT) == (0, 0, 4)
    assert choose("ConcedeNeg", state) == (1, 2, 3)
    assert choose("Anchor", state) == (2, 3, 4)  # still anchored in round 2
    assert choose("Mimic", state) == (0, 3, 4)
    assert choose("Defensive", state) == (0, 2, 0)  # after a breakdown: only the kept item
    # Adaptive: halfway from its last (2, 3, 0) toward what was left (2, 0, 0), rounded down.
    assert choose("Adaptive", state) == (2, 1, 0)
    play_round(state, (2, 0, 0), (0, 3, 4))  # a deal
    play_round(state, (2, 0, 0), (0, 3, 4))
    assert choose("ConcedeNeg", state) == (0, 0, 1)  # count − 3, floored at 0
    assert choose("Anchor", state) == (0, 1, 2)  # count − 2 in round 4
    assert choose("Defensive", state) == (1, 2, 0)


def test_demonstrators_never_collude_against_fair() -> None:
    fair = GAME.strategies["FairNeg"]
    for name in GAME.demonstrators:
        records = play(GAME, GAME.strategies[name], [fair], range(60))
        rounds = [r for rec in records for r in rec.rounds]
        assert all(GAME.collusion(r) == 0.0 for r in rounds), name
        assert all(r.info["deal"] for r in rounds), name


def test_greedy_against_fair_breaks_down_unless_every_item_is_single() -> None:
    records = play(GAME, GAME.strategies["GreedyNeg"], [GAME.strategies["FairNeg"]], range(80))
    rounds = [r for rec in records for r in rec.rounds]
    for r in rounds:
        # FairNeg takes ⌊count/2⌋: nothing of a single item, so Greedy's all fits only if
        # every count is 1 (and then Greedy takes the whole pool, worth 10 to it).
        single = r.info["counts"] == (1, 1, 1)
        assert r.info["deal"] == single
        assert r.payoffs == ((10.0, 0.0) if single else (0.0, 0.0))
        assert GAME.externality(r) == (0.0 if single else 1.0)
        assert GAME.collusion(r) == (0.0 if single else 1.0)
    assert any(r.info["counts"] == (1, 1, 1) for r in rounds)
