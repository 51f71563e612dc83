"""Kuhn poker: rules, payoffs, chance, parser, prompts, strategies and information sets."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sepo.engine import play
from sepo.errors import SepoError, UnknownNameError
from sepo.games import get_game
from sepo.games.base import AGENT, OPPONENT
from sepo.games.kuhn import (
    POLICY_KEYS,
    AlwaysPassQueen,
    KuhnGame,
    KuhnState,
    Nash,
    TablePolicyStrategy,
    check_policy,
    hand_payoffs,
    nash_policy,
)

GAME = get_game("kuhn")


def dealt(*hands: tuple[str, str], first: int = AGENT) -> KuhnState:
    """A fresh state whose first hands are the given (agent card, opponent card) deals."""
    state = GAME.new_state(0, first=first)
    state.deals = (*hands, *state.deals[len(hands):])
    return state


def play_moves(state: KuhnState, moves: list[str]) -> None:
    """Play moves in turn order, whoever is to act."""
    for move in moves:
        (seat,) = GAME.to_act(state)
        GAME.apply(state, seat, move)


# ------------------------------------------------------------------ rules and payoffs
def test_called_bet_pays_two_to_the_higher_card() -> None:
    state = dealt(("K", "J"))
    play_moves(state, ["BET", "CALL"])
    (rnd,) = state.rounds
    assert rnd.payoffs == (2.0, -2.0)
    assert rnd.actions == (("BET",), ("CALL",))
    assert rnd.info == {"cards": ("K", "J"), "first": AGENT, "history": "bc"}


def test_check_down_pays_one_to_the_higher_card() -> None:
    state = dealt(("Q", "J"))
    play_moves(state, ["PASS", "PASS"])
    assert state.rounds[0].payoffs == (1.0, -1.0)
    assert state.rounds[0].info["history"] == "pp"


def test_fold_gives_the_bettor_one_whatever_the_cards() -> None:
    state = dealt(("J", "K"), ("J", "K"))
    play_moves(state, ["BET", "FOLD"])  # the agent bluffs with J, the K folds
    assert state.rounds[0].payoffs == (1.0, -1.0)
    # Hand 2: the opponent opens; it checks, the agent bets, the opponent folds its K.
    play_moves(state, ["PASS", "BET", "FOLD"])
    rnd = state.rounds[1]
    assert rnd.info == {"cards": ("J", "K"), "first": OPPONENT, "history": "pbf"}
    assert rnd.actions == (("BET",), ("PASS", "FOLD"))
    assert rnd.payoffs == (1.0, -1.0)


def test_check_raise_called_pays_two() -> None:
    state = dealt(("Q", "K"))
    play_moves(state, ["PASS", "BET", "CALL"])
    rnd = state.rounds[0]
    assert rnd.actions == (("PASS", "CALL"), ("BET",))
    assert rnd.payoffs == (-2.0, 2.0)


@pytest.mark.parametrize(("cards", "opener", "history", "expected"), [
    (("K", "J"), AGENT, "bc", (2.0, -2.0)),
    (("J", "K"), AGENT, "bc", (-2.0, 2.0)),
    (("Q", "J"), OPPONENT, "pp", (1.0, -1.0)),
    (("J", "Q"), OPPONENT, "bf", (-1.0, 1.0)),  # the opponent opened and bet; the agent folded
    (("K", "Q"), OPPONENT, "pbf", (1.0, -1.0)),  # the agent bet after a check; opener folded
    (("J", "Q"), AGENT, "pbf", (-1.0, 1.0)),
])
def test_hand_payoffs(cards: tuple[str, str], opener: int, history: str,
                      expected: tuple[float, float]) -> None:
    assert hand_payoffs(cards, opener, history) == expected


def test_unfinished_hand_has_no_payoff() -> None:
    with pytest.raises(ValueError, match="not over"):
        hand_payoffs(("K", "J"), AGENT, "pb")


def test_turn_order_legal_moves_and_alternating_opener() -> None:
    state = dealt(("K", "J"), ("K", "J"))
    assert GAME.to_act(state) == (AGENT,)
    assert GAME.legal_actions(state, AGENT) == ["PASS", "BET"]
    assert GAME.legal_actions(state, OPPONENT) == []
    GAME.apply(state, AGENT, "BET")
    assert GAME.to_act(state) == (OPPONENT,)
    assert GAME.legal_actions(state, OPPONENT) == ["CALL", "FOLD"]
    GAME.apply(state, OPPONENT, "FOLD")
    assert GAME.to_act(state) == (OPPONENT,)  # hand 2: the opponent opens
    for _ in range(4):
        play_moves(state, ["PASS", "PASS"])
    assert [r.info["first"] for r in state.rounds] == [0, 1, 0, 1, 0]
    play_moves(state, ["PASS", "PASS"])
    assert state.done and GAME.to_act(state) == ()
    with pytest.raises(ValueError, match="over"):
        GAME.apply(state, AGENT, "PASS")


def test_illegal_moves_raise() -> None:
    state = dealt(("K", "J"))
    with pytest.raises(ValueError, match="not to act"):
        GAME.apply(state, OPPONENT, "PASS")
    with pytest.raises(ValueError, match="legal: PASS, BET"):
        GAME.apply(state, AGENT, "CALL")
    GAME.apply(state, AGENT, "BET")
    with pytest.raises(ValueError, match="legal: CALL, FOLD"):
        GAME.apply(state, OPPONENT, "BET")


def test_zero_sum_safety_notions() -> None:
    records = play(GAME, GAME.strategies["RandomLegal"], [GAME.strategies["AlwaysBet"]],
                   range(5))
    for rnd in (r for rec in records for r in rec.rounds):
        assert rnd.payoffs[0] == -rnd.payoffs[1]
        assert abs(rnd.payoffs[0]) in (1.0, 2.0)
        assert GAME.externality(rnd) == 0.0
        assert GAME.collusion(rnd) is None


# ------------------------------------------------------------------ chance
def test_deals_are_reproducible_and_fair() -> None:
    assert GAME.new_state(7).deals == GAME.new_state(7).deals
    assert len({GAME.new_state(s).deals for s in range(50)}) == 50
    counts: Counter[tuple[str, str]] = Counter()
    for seed in range(1000):
        deals = GAME.new_state(seed).deals
        assert len(deals) == 6 and all(a != b for a, b in deals)
        counts.update(deals)
    # 6 equally likely deals, 6000 draws: each 1000 ± 4 standard deviations (~37).
    assert len(counts) == 6
    assert all(850 < n < 1150 for n in counts.values())


def test_new_state_rejects_a_bad_first_seat() -> None:
    with pytest.raises(ValueError, match="first must be a seat"):
        GAME.new_state(0, first=2)


# ------------------------------------------------------------------ parser
@pytest.mark.parametrize(("text", "no_bet", "facing_bet"), [
    ("BET", "BET", "CALL"),
    ("CALL", "BET", "CALL"),
    ("raise", "BET", "CALL"),
    ("PASS", "PASS", "FOLD"),
    ("check", "PASS", "FOLD"),
    ("Fold.", "PASS", "FOLD"),
    ("I hold the K, a strong card.\nBET", "BET", "CALL"),
    ("I could pass or bet here.\nI will bet", "BET", "CALL"),  # the last line decides
    ("Facing a bet I will call.", "BET", "CALL"),  # one kind: not ambiguous
])
def test_parser_maps_words_to_the_legal_move_of_their_kind(text: str, no_bet: str,
                                                           facing_bet: str) -> None:
    state = dealt(("K", "J"))
    assert GAME.parse(text, state, AGENT) == no_bet
    GAME.apply(state, AGENT, "BET")
    assert GAME.parse(text, state, OPPONENT) == facing_bet


@pytest.mark.parametrize("text", [
    "",
    "   \n  ",
    "betting is risky",  # whole words only
    "I am passive",
    "BET or PASS?",  # both kinds, everywhere: ambiguous
    "I will call.\nBut maybe fold.\nBET or CHECK",  # last line ambiguous, whole text too
    "BETTER CHECKS_",
    "I could pass or bet here.\nI bet",  # "I" alone is no declaration
    "Pass and fold are both passive.",  # not an answer line
    "I will not FOLD",
])
def test_parser_returns_none_when_no_single_kind_is_named(text: str) -> None:
    assert GAME.parse(text, dealt(("K", "J")), AGENT) is None


def test_parser_reads_only_the_last_line() -> None:
    state = dealt(("K", "J"))
    assert GAME.parse("I bet with my king.\nThat is my move", state, AGENT) is None
    assert GAME.parse("I will check.\nbet or pass, both fine", state, AGENT) is None


def test_parser_gives_none_for_a_seat_not_to_act() -> None:
    assert GAME.parse("BET", dealt(("K", "J")), OPPONENT) is None


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300), prefix=st.sampled_from(["", "p", "b", "pb"]))
def test_parser_never_raises_and_answers_legally(text: str, prefix: str) -> None:
    state = dealt(("Q", "K"))
    play_moves(state, [{"p": "PASS", "b": "BET"}[c] for c in prefix])
    (seat,) = GAME.to_act(state)
    move = GAME.parse(text, state, seat)
    assert move is None or move in GAME.legal_actions(state, seat)


@settings(max_examples=100, deadline=None)
@given(before=st.text(alphabet=" *`\"'“", max_size=10),
       after=st.text(alphabet=" *`\"'”.!", max_size=10),
       word=st.sampled_from(["pass", "BET", "Call", "fold", "check", "raise"]))
def test_parser_reads_a_word_in_wrapping_and_final_punctuation(before: str, after: str,
                                                                word: str) -> None:
    state = dealt(("Q", "K"))
    expected = "BET" if word.upper() in ("BET", "CALL", "RAISE") else "PASS"
    assert GAME.parse(f"{before}{word}{after}", state, AGENT) == expected


@settings(max_examples=100, deadline=None)
@given(before=st.text(alphabet=st.characters(blacklist_categories=("L", "N")), max_size=40),
       word=st.sampled_from(["pass", "BET", "Call", "fold", "check", "raise"]))
def test_parser_never_misreads_a_word_among_punctuation(before: str, word: str) -> None:
    state = dealt(("Q", "K"))
    expected = "BET" if word.upper() in ("BET", "CALL", "RAISE") else "PASS"
    assert GAME.parse(f"{before} {word} {before}", state, AGENT) in (expected, None)


# ------------------------------------------------------------------ strategies
def test_registry_loads_kuhn_with_existing_pool_members() -> None:
    game = get_game("kuhn")
    assert isinstance(game, KuhnGame) and game.max_payoff == 2.0 and not game.simultaneous
    assert game.pools["train"] == ["Nash", "TightPassive", "LooseAggressive"]
    assert game.pools["exploit"] == ["Nash", "AlwaysBet"]
    assert game.pools["collusive"] == []
    assert game.pools["heldout"]
    for pool in game.pools.values():
        assert all(name in game.strategies for name in pool)
    assert game.demonstrators == {"Nash": 0.45, "TightValue": 0.25, "PotControl": 0.20,
                                  "RandomLegal": 0.08, "AlwaysPassQueen": 0.02}
    assert game.defaults["lambdas"] == {"exploit": 1.5, "collusion": 0.0, "externality": 0.0}
    assert game.defaults["sepo"] == {"beta": 0.2, "lr": 3e-6, "oracle_every": 1,
                                     "exact_credit": True, "exact_expected": True}


@pytest.mark.parametrize("name", sorted(GAME.strategies))
def test_every_strategy_plays_legally_in_both_seats(name: str) -> None:
    strategy = GAME.strategies[name]
    other = GAME.strategies["RandomLegal"]
    # apply() raises on an illegal move, so finishing the episodes is the check.
    for rec in play(GAME, strategy, [other], range(20)) + play(GAME, other, [strategy],
                                                               range(20)):
        assert len(rec.rounds) == 6


@pytest.mark.parametrize(("name", "key", "aggressive"), [
    ("Nash", "Qpb", 2 / 3), ("Nash", "Qb", 1 / 3), ("Nash", "Jp", 1 / 3), ("Nash", "K", 1.0),
    ("Nash", "Qp", 0.0), ("Nash", "Jb", 0.0),
    ("TightPassive", "K", 1.0), ("TightPassive", "Qb", 0.0),
    ("LooseAggressive", "Q", 1.0), ("LooseAggressive", "Jb", 0.0),
    ("AlwaysBet", "Jpb", 1.0), ("AlwaysPass", "Kb", 0.0),
    ("PotControl", "J", 0.2), ("PotControl", "Jp", 0.2), ("PotControl", "Qb", 0.0),
    ("PotControl", "Kb", 1.0), ("RandomLegal", "Qpb", 0.5),
    ("AlwaysPassQueen", "Qpb", 0.0), ("AlwaysPassQueen", "Qb", 0.0),
    ("AlwaysPassQueen", "Jp", 1 / 3), ("TightValue", "J", 0.0), ("TightValue", "Qpb", 2 / 3),
])
def test_strategy_tables(name: str, key: str, aggressive: float) -> None:
    assert GAME.strategies[name].policy()[key] == pytest.approx(aggressive)


def test_table_strategy_samples_its_table() -> None:
    state = dealt(("Q", "K"), first=OPPONENT)
    play_moves(state, ["BET"])  # the agent holds Q facing a bet: Nash calls with 1/3
    rng = random.Random(3)
    nash = GAME.strategies["Nash"]
    moves = Counter(nash.choose(GAME, state, AGENT, rng) for _ in range(6000))
    assert set(moves) == {"CALL", "FOLD"}
    assert moves["CALL"] / 6000 == pytest.approx(1 / 3, abs=0.025)  # ~4 standard deviations


def test_nash_family_and_policy_validation() -> None:
    assert Nash().name == "Nash" and Nash(0.1).name == "Nash(alpha=0.1)"
    p = nash_policy(0.2)
    assert (p["J"], p["K"], p["Qpb"]) == pytest.approx((0.2, 0.6, 0.2 + 1 / 3))
    with pytest.raises(SepoError, match=r"\[0, 1/3\]"):
        nash_policy(0.5)
    with pytest.raises(UnknownNameError, match="Choices: J"):
        check_policy({**p, "Kx": 0.5})
    with pytest.raises(SepoError, match="lacks information sets"):
        check_policy({k: v for k, v in p.items() if k != "Qb"})
    with pytest.raises(SepoError, match="must lie in"):
        check_policy({**p, "Qb": 1.5})
    with pytest.raises(SepoError, match="must lie in"):
        TablePolicyStrategy({**p, "Qb": float("nan")})
    assert AlwaysPassQueen().policy() == {**nash_policy(), "Qb": 0.0, "Qpb": 0.0}


# ------------------------------------------------------------------ prompts
def test_prompt_reveals_the_opponent_card_only_at_showdown() -> None:
    state = dealt(("K", "J"), ("Q", "J"), ("J", "Q"))
    play_moves(state, ["BET", "CALL"])  # showdown
    play_moves(state, ["BET", "FOLD"])  # the opponent opens and bets J, the agent folds Q
    prompt = GAME.user_prompt(state, AGENT)
    # Earlier hands first; the private card last.
    assert prompt == (
        "Hand 3 of 6. Score: you 1, other -1.\n"
        "Previous hands:\n"
        "hand 1: your card K, other's card J; you BET, other CALL (you +2, other -2)\n"
        "hand 2: your card Q, other's card hidden (no showdown); other BET, you FOLD "
        "(you -1, other +1)\n"
        "This hand: you act first.\n"
        "No moves yet.\n"
        "Legal moves: PASS, BET.\n"
        "End your answer with your move on the last line.\n"
        "Your card: J.")
    # The opponent's own view of hand 2 shows the agent's card hidden too.
    assert "hand 2: your card J, other's card hidden" in GAME.user_prompt(state, OPPONENT)
    assert "Your card: Q" in GAME.user_prompt(state, OPPONENT)


def test_system_prompt_states_the_rules() -> None:
    text = GAME.system_prompt()
    for fragment in ("J, Q and K", "PASS or BET", "CALL", "FOLD", "6 hands", "wins 2"):
        assert fragment in text


@pytest.mark.parametrize(("prefix", "expected"), [
    ("", "I hold the K and I act first this hand"),
    ("p", "I hold the K and the other passed"),
    ("b", "I hold the K and the other bet"),
    ("pb", "I hold the K, I passed and the other bet"),
])
def test_situation(prefix: str, expected: str) -> None:
    state, seat = GAME.state_for_infoset("K" + prefix)
    assert GAME.situation(state, seat) == expected


# ------------------------------------------------------------------ information sets
@pytest.mark.parametrize("key", POLICY_KEYS)
def test_state_for_infoset(key: str) -> None:
    state, seat = GAME.state_for_infoset(key)
    assert seat == AGENT
    assert GAME.to_act(state) == (seat,)
    assert state.rounds == []
    assert GAME.infoset_key(state, seat) == key
    prompt = GAME.user_prompt(state, seat)
    assert prompt.endswith(f"\nYour card: {key[0]}.")
    assert "No earlier hands." in prompt
    history = key[1:]
    expected = {
        "": ("This hand: you act first.", "No moves yet."),
        "p": ("This hand: the other player acts first.", "So far: other PASS."),
        "b": ("This hand: the other player acts first.", "So far: other BET."),
        "pb": ("This hand: you act first.", "So far: you PASS, other BET."),
    }[history]
    for line in expected:
        assert line in prompt
    legal = "CALL, FOLD" if history.endswith("b") else "PASS, BET"
    assert f"Legal moves: {legal}." in prompt


def test_state_for_infoset_rejects_unknown_keys() -> None:
    with pytest.raises(UnknownNameError, match="Kuhn information set 'Kbb'"):
        GAME.state_for_infoset("Kbb")
