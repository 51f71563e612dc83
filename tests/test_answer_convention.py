"""The answer convention, the same for every game: the last non-empty line is the answer, and
it names an action only as the action alone or as a declaration followed by the action.

Checked for every game: truncated SFT completions never parse to an action before their first
complete statement of it, negations and contradictions never choose an action, look-alike
spellings fail, the accepted forms parse to the exact action, and parsing stays fast on huge
adversarial inputs.
"""

from __future__ import annotations

import gc
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sepo.engine import Decision, DecisionRequest, Engine, Episode, StrategyPlayer
from sepo.games import Game, GameState, get_game
from sepo.games.bargaining import BargainingState, vector_mentions
from sepo.games.base import AGENT, MAX_ANSWER_CHARS, OPPONENT, Action, Strategy, word_mentions
from sepo.games.kuhn import KuhnState
from sepo.games.negotiation import number_mentions
from sepo.sft.data import completion_text, game_examples, reason_sentence

GAME_NAMES = ("ipd", "auction", "negotiation", "bargaining", "kuhn")


# ------------------------------------------------------------------ states to parse in
def bargaining_state() -> BargainingState:
    state = get_game("bargaining").new_state(0)
    assert isinstance(state, BargainingState)
    state.counts, state.values = (1, 2, 3), ((4, 0, 2), (0, 2, 2))
    return state


def kuhn_state(facing_bet: bool) -> tuple[KuhnState, int]:
    """A Kuhn state with the agent to open (no bet faced), or the opponent facing its bet."""
    game = get_game("kuhn")
    state = game.new_state(0, first=AGENT)
    assert isinstance(state, KuhnState)
    if facing_bet:
        game.apply(state, AGENT, "BET")
        return state, OPPONENT
    return state, AGENT


def parser(name: str) -> Callable[[str], Action | None]:
    """`text -> action` for a game, in a fixed state (Kuhn: no bet faced)."""
    game = get_game(name)
    if name == "bargaining":
        state: GameState = bargaining_state()
        seat = AGENT
    elif name == "kuhn":
        state, seat = kuhn_state(False)
    else:
        state, seat = game.new_state(0), AGENT
    return lambda text: game.parse(text, state, seat)


# ------------------------------------------------------------------ SFT completions
class PrefixChecker:
    """A demonstrator that, at each decision, writes the SFT completion and checks every prefix
    of it (each character cut, so each word cut too) in the live state."""

    def __init__(self, strategy: Strategy, *, chars: bool = True) -> None:
        self.strategy = strategy
        self.name = strategy.name
        self.chars = chars
        self.seen: set[tuple[str, str]] = set()
        self.checked = 0

    def cuts(self, text: str) -> list[int]:
        if self.chars:
            return list(range(len(text) + 1))
        return sorted({0, len(text)} | {m.start() for m in re.finditer(r"\s", text)}
                      | {m.end() for m in re.finditer(r"\s", text)})

    def check(self, game: Game, state: GameState, seat: int, action: Action) -> None:
        for reasoning in (True, False):
            text = completion_text(game, state, seat, self.strategy, action, reasoning=reasoning)
            key = (text, repr(action))
            if key in self.seen:
                continue
            self.seen.add(key)
            # The first complete statement of the action: the end of "..., so I play X" in the
            # reason sentence (the template states the action twice), else the bare line.
            if reasoning:
                reason = reason_sentence(game, state, seat, self.strategy, action)
                assert reason.endswith(f", so I play {game.format_action(action)}.")
                first_statement = len(reason) - 1
            else:
                first_statement = len(text)
            assert game.parse(text, state, seat) == action, text
            for k in self.cuts(text):
                got = game.parse(text[:k], state, seat)
                if k < first_statement:
                    assert got is None, (text[:k], got)
                else:
                    assert got in (None, action), (text[:k], got)
            self.checked += 1

    def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        out = []
        for r in requests:
            action = self.strategy.choose(r.game, r.state, r.seat, r.rng)
            self.check(r.game, r.state, r.seat, action)
            out.append(Decision(action))
        return out


def play_checked(game: Game, demonstrator: str, opponents: Sequence[str], seeds: Sequence[int],
                 *, chars: bool) -> int:
    checker = PrefixChecker(game.strategies[demonstrator], chars=chars)
    episodes = [Episode(game, checker, StrategyPlayer(game.strategies[o]), seed)
                for o in opponents for seed in seeds]
    Engine(episodes).run()
    return checker.checked


@pytest.mark.parametrize("name", GAME_NAMES)
def test_no_prefix_of_an_sft_completion_names_an_action_before_it_is_stated(name: str) -> None:
    """Every strategy as the demonstrator, against every strategy: word cuts of every
    completion, character cuts against a few opponents."""
    game = get_game(name)
    strategies = list(game.strategies)
    checked = 0
    for k, demonstrator in enumerate(strategies):
        checked += play_checked(game, demonstrator, strategies, [k], chars=False)
        few = [demonstrator, strategies[(k + 1) % len(strategies)]]
        checked += play_checked(game, demonstrator, few, [100 + k], chars=True)
    assert checked > 100


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(GAME_NAMES), pick=st.integers(0, 10**6), seed=st.integers(0, 10**6))
def test_prefix_property_on_random_episodes(name: str, pick: int, seed: int) -> None:
    game = get_game(name)
    strategies = list(game.strategies)
    rng = random.Random(pick)
    assert play_checked(game, rng.choice(strategies), [rng.choice(strategies)], [seed],
                        chars=True) > 0


@pytest.mark.parametrize("name", GAME_NAMES)
def test_the_sft_recorder_parses_every_completion_back(name: str) -> None:
    """`DemonstratorRecorder` raises when a completion does not parse back to its action:
    generating data with each strategy alone as the demonstrator must not raise."""
    game = get_game(name)
    for demonstrator in game.strategies:
        for reasoning in (True, False):
            episodes = game_examples(game, episodes_per_opponent=1, reasoning=reasoning,
                                     demonstrators=[demonstrator])
            assert episodes and all(episodes)


@pytest.mark.parametrize("name", GAME_NAMES)
def test_a_canonical_action_line_parses_to_its_action(name: str) -> None:
    """What the LM's stop watcher stops on (the last line exactly a canonical action) is an
    answer, and names that action, in every state reached by random play."""
    game = get_game(name)
    rng = random.Random(0)
    for seed in range(3):
        state = game.new_state(seed)
        while not state.done:
            for seat in game.to_act(state):
                for action in game.legal_actions(state, seat):
                    line = game.format_action(action)
                    assert game.parse(line, state, seat) == action
                    assert game.parse(f"Some reasoning.\n{line}\n", state, seat) == action
            seat = game.to_act(state)[0]
            legal = game.legal_actions(state, seat)
            game.apply(state, seat, legal[rng.randrange(len(legal))])


# ------------------------------------------------------------------ negations
NEGATED: dict[str, list[str]] = {
    "ipd": ["don't defect", "Don't DEFECT.", "not DEFECT", "Not COOPERATE!", "never defect",
            "I will not play DEFECT", "I won't play DEFECT", "I do not choose DEFECT",
            "don't play DEFECT", "I don’t play DEFECT", "I never play DEFECT", "No DEFECT",
            "Action: not DEFECT", "Instead of COOPERATE I play DEFECT",
            "I think (not really) I play DEFECT", "If I play DEFECT", "Maybe I will DEFECT",
            "Without thinking I will play DEFECT", "I cannot choose DEFECT"],
    "auction": ["Don't bid HIGH", "do not bid LOW.", "not HIGH", "not 2", "never MEDIUM",
                "I will not bid HIGH", "I won't bid HIGH", "Action: not HIGH", "Bid: no 3",
                "If I bid HIGH", "I dont bid LOW"],
    "negotiation": ["not 9", "Not 6.", "Action: not 9", "I will not demand 9",
                    "I won't demand 9", "I don't demand 6", "never 7", "no 5",
                    "Demand: not 4", "Unless I demand 6", "I will never demand 8"],
    "bargaining": ["not [1, 2, 0]", "Action: not [1, 2, 0]", "I will not demand [1, 2, 0]",
                   "I won't take [1, 0, 0]", "don't take books=1 hats=2 balls=0",
                   "Demand: never (1, 2, 0)", "If I take [1, 0, 0]"],
    "kuhn": ["I will not FOLD", "don't fold", "Never BET", "not CALL", "Action: not CALL",
             "I won't call", "I do not choose PASS", "Instead of folding I will CALL",
             "I'll never raise"],
}


@pytest.mark.parametrize(("name", "text"),
                         [(n, t) for n, texts in NEGATED.items() for t in texts])
def test_a_negated_action_is_never_chosen(name: str, text: str) -> None:
    assert parser(name)(text) is None
    assert parser(name)(f"Let me think.\n{text}") is None
    if name == "kuhn":
        state, seat = kuhn_state(True)
        assert get_game("kuhn").parse(text, state, seat) is None


# ------------------------------------------------------------------ contradictions
CONTRADICTORY: dict[str, list[str]] = {
    "ipd": ["COOPERATE DEFECT", "COOPERATE or DEFECT", "COOPERATE/DEFECT", "DEFECT, COOPERATE",
            "I play COOPERATE or DEFECT", "I play DEFECT (not COOPERATE)",
            "I play COOPERATE. I play DEFECT.", "Action: COOPERATE; Action: DEFECT",
            "COOPERATE, no wait, DEFECT", "COOPERATE or I play DEFECT",
            "I'll DEFECT.\nCOOPERATE or DEFECT?"],
    "auction": ["LOW HIGH", "I bid LOW or HIGH", "I bid LOW. I bid HIGH.",
                "Bid: LOW, bid: HIGH", "HIGH 2", "LOW (1) or HIGH (3)", "MEDIUM, i.e. 2"],
    "negotiation": ["5 or 6", "I demand 5. I demand 6.", "I demand 6 out of 10", "6/10",
                    "3-4", "6 6", "After 4 rounds I demand 6"],
    "bargaining": ["[1, 0, 0] or [0, 1, 0]", "I take [1, 0, 0]. I take [0, 1, 0].",
                   "[1, 0, 0] I take [0, 1, 0]", "[1, 0, 3] [1, 0, 3]",
                   "books=1 books=0 hats=1 balls=1"],
    "kuhn": ["BET or PASS", "CALL FOLD", "I will bet. I will fold.", "Action: BET, PASS",
             "Fold or I will call"],
}


@pytest.mark.parametrize(("name", "text"),
                         [(n, t) for n, texts in CONTRADICTORY.items() for t in texts])
def test_a_contradictory_line_names_no_action(name: str, text: str) -> None:
    assert parser(name)(text) is None


# ------------------------------------------------------------------ look-alikes
LOOK_ALIKES: dict[str, list[str]] = {
    # Cyrillic С, Е, О, Н, А, В and Greek Η, Ο: the word mixes scripts.
    "ipd": ["I choose СOOPERATE (not DEFECT)", "I choose СOOPERATE", "DЕFЕCT",
            "Action: СOOPERATE", "The рlayer is nice; I play DEFECT"],
    "auction": ["НIGH", "Ηigh", "I bid МEDIUM", "Bid: LОW"],
    "negotiation": ["I demand 6 (nоt 9)", "Dеmand: 6", "so I plаy 5."],
    "bargaining": ["books=1 hаts=2 balls=0", "I tаke [1, 0, 0]"],
    "kuhn": ["I play ВET (not FOLD)", "ВET", "FΟLD", "Action: СALL"],
}


@pytest.mark.parametrize(("name", "text"),
                         [(n, t) for n, texts in LOOK_ALIKES.items() for t in texts])
def test_a_word_mixing_scripts_fails(name: str, text: str) -> None:
    assert parser(name)(text) is None


# ------------------------------------------------------------------ accepted forms
IPD_REASON = ("The other played DEFECT last round; I follow TitForTat (cooperates first, then "
              "copies the other's last move), so I play DEFECT.")
ACCEPTED: dict[str, list[tuple[str, Any]]] = {
    "ipd": [
        ("DEFECT", "DEFECT"), ("cooperate", "COOPERATE"), ("  Cooperate.  ", "COOPERATE"),
        ("**DEFECT**", "DEFECT"), ('"DEFECT"', "DEFECT"), ("`COOPERATE`", "COOPERATE"),
        ("DEFECT!", "DEFECT"), ("Action: COOPERATE", "COOPERATE"),
        ("**Action:** DEFECT", "DEFECT"), ("Move: defect", "DEFECT"),
        ("Final answer: DEFECT.", "DEFECT"), ("I play COOPERATE", "COOPERATE"),
        ("so I play DEFECT.", "DEFECT"), ("I choose DEFECT", "DEFECT"),
        ("I will cooperate", "COOPERATE"), ("I'll play DEFECT", "DEFECT"),
        ("I’ll play DEFECT", "DEFECT"), ("I will play COOPERATE.", "COOPERATE"),
        ("I'll go with DEFECT.", "DEFECT"), ("My move is COOPERATE", "COOPERATE"),
        ('My final answer is "DEFECT"', "DEFECT"), ("I choose: DEFECT", "DEFECT"),
        ("They defected twice; I play DEFECT", "DEFECT"), ("No. Action: DEFECT", "DEFECT"),
        ("I don't trust them, so I play DEFECT.", "DEFECT"), (IPD_REASON, "DEFECT"),
        (f"{IPD_REASON}\nDEFECT", "DEFECT"), ("Thinking...\n\nCOOPERATE\n\n", "COOPERATE"),
        ("ＤＥＦＥＣＴ", "DEFECT"), ("Мой ход.\nDEFECT", "DEFECT"),
    ],
    "auction": [
        ("HIGH", "HIGH"), ("  low \n", "LOW"), ("2", "MEDIUM"), ("**3**", "HIGH"),
        ("1.", "LOW"), ("I bid HIGH.", "HIGH"), ("Bid: low", "LOW"),
        ("Action: MEDIUM", "MEDIUM"), ("I bid **Medium**.", "MEDIUM"),
        ("My value is 4, so I bid HIGH.", "HIGH"), ("LOW or HIGH?\nHIGH", "HIGH"),
        ("My value is 4 and the other bid LOW last round; I follow Truthful (bids MEDIUM when "
         "its value is 2 and HIGH when its value is 4), so I play HIGH.", "HIGH"),
        ("ＨＩＧＨ", "HIGH"),
    ],
    "negotiation": [
        ("6", 6), (" 5 \n", 5), ("**3**", 3), ("06", 6), ("+6", 6), ("7.", 7),
        ("I demand 7.", 7), ("demand: 9!", 9), ("Action: 5", 5), ("so I play 5.", 5),
        ("I offer 4, you get 6\n6", 6), ("They asked 4; I demand 6", 6), ("６", 6),
        ("The other demanded 7 last round and the deal broke down; I follow Concede (demands "
         "6, and 5 once a deal has broken down), so I play 5.", 5),
    ],
    "bargaining": [
        ("[1, 2, 0]", (1, 2, 0)), ("(1,2,0)", (1, 2, 0)), ("1, 2, 0", (1, 2, 0)),
        ("[1 2 0]", (1, 2, 0)), ("[ 1, 2, 0 ]", (1, 2, 0)),
        ("books=1 hats=2 balls=0", (1, 2, 0)), ("Books: 1, Hats: 2, Balls: 0", (1, 2, 0)),
        ("book=1, hat=0, ball=3", (1, 0, 3)), ("balls: 0, books: 1, hats: 2", (1, 2, 0)),
        ("My demand: 1, 2, 0.", (1, 2, 0)), ("I take [1, 0, 0]", (1, 0, 0)),
        ("Action: [0, 1, 3]", (0, 1, 3)), ("**[1, 0, 3]**", (1, 0, 3)),
        ("so I play [1, 2, 3].", (1, 2, 3)), ("[-0, 1, 0]", (0, 1, 0)),
        ("They asked [0, 2, 3]; I demand [1, 0, 0]", (1, 0, 0)),
    ],
    "kuhn": [
        ("BET", "BET"), ("check", "PASS"), ("Fold.", "PASS"), ("raise!", "BET"),
        ("CALL", "BET"), ("I will call.", "BET"), ("Move: PASS", "PASS"),
        ("Facing a bet I will call", "BET"), ("I pass or bet?\nBET", "BET"),
        ("I hold the K and I act first this hand; I follow AlwaysBet (always bets, and calls "
         "every bet), so I play BET.", "BET"),
    ],
}


@pytest.mark.parametrize(("name", "text", "expected"),
                         [(n, t, e) for n, cases in ACCEPTED.items() for t, e in cases])
def test_accepted_forms_parse_to_the_exact_action(name: str, text: str, expected: Any) -> None:
    assert parser(name)(text) == expected
    assert parser(name)(f"Earlier reasoning, DEFECT or 9 or [0, 0, 0].\n{text}") == expected


def test_kuhn_maps_a_word_to_the_legal_move_of_its_kind_when_facing_a_bet() -> None:
    state, seat = kuhn_state(True)
    game = get_game("kuhn")
    for text, expected in [("BET", "CALL"), ("raise", "CALL"), ("check", "FOLD"),
                           ("PASS.", "FOLD"), ("I will fold", "FOLD"), ("Action: call", "CALL")]:
        assert game.parse(text, state, seat) == expected


@pytest.mark.parametrize(("name", "text"), [
    ("ipd", "DEFECT\nThat is my final choice."),  # the last line names nothing
    ("ipd", "I defect!"),  # "I" alone is no declaration ("I pass" may be a cut "I passed")
    ("ipd", "→ DEFECT ←"), ("ipd", "DEFECT?"), ("ipd", "(DEFECT)"), ("ipd", "DEFECTION"),
    ("ipd", "co-operate"), ("ipd", "The other played DEFECT"), ("ipd", "_defect_"),
    ("auction", "I bid 2"), ("auction", "medium-rare"), ("auction", "HIGH's"),
    ("auction", "4"), ("auction", "(2)"),
    ("negotiation", "10"), ("negotiation", "0"), ("negotiation", "5.5"), ("negotiation", "7th"),
    ("negotiation", "-3"), ("negotiation", "seven"), ("negotiation", "The other demanded 6"),
    ("bargaining", "[1, 2, 0"), ("bargaining", "1, 2, 0]"), ("bargaining", "[1, 2, 0)"),
    ("bargaining", "[[1, 2, 0]]"), ("bargaining", "[2, 0, 0]"), ("bargaining", "[1, 2]"),
    ("bargaining", "[1, 2, 0, 1]"), ("bargaining", "[0.5, 1, 1]"), ("bargaining", "1,2,0x"),
    ("kuhn", "I pass"), ("kuhn", "betting is risky"), ("kuhn", "the other bet"),
])
def test_other_lines_name_no_action(name: str, text: str) -> None:
    assert parser(name)(text) is None


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(GAME_NAMES), text=st.text(max_size=200))
def test_only_the_last_line_is_read(name: str, text: str) -> None:
    """Whatever comes before, an answer on the last line decides; a last line that is not an
    answer makes the whole text none, whatever the earlier lines say."""
    parse = parser(name)
    canonical = {"ipd": "DEFECT", "auction": "LOW", "negotiation": "4", "bargaining": "[1, 0, 2]",
                 "kuhn": "BET"}[name]
    expected = parse(canonical)
    assert expected is not None
    assert parse(f"{text}\n{canonical}") == expected
    assert parse(f"{canonical}\n{text}\nno answer here") is None


# ------------------------------------------------------------------ linear time
def adversarial(name: str, size: int) -> dict[str, str]:
    word = {"ipd": "DEFECT", "auction": "HIGH", "negotiation": "6", "bargaining": "[1, 0, 2]",
            "kuhn": "BET"}[name]
    words = {"ipd": "COOPERATE DEFECT ", "auction": "LOW HIGH MEDIUM ", "negotiation": "5 6 ",
             "bargaining": "[1, 0, 2] [0, 1, 0] ", "kuhn": "BET PASS CALL FOLD "}[name]

    def fill(unit: str) -> str:
        return unit * (size // len(unit))

    return {
        "1,1,1": fill("1,"), "1, 1, 1": fill("1, "), "[[[[": fill("["), "[1, [1, ": fill("[1, "),
        "not not": fill("not "), "action words": fill(words), "one line": fill("x"),
        "newlines": fill("\n"), "spaces then answer": fill(" ") + word,
        "answer then newlines": word + fill("\n"), "books=1": fill("books=1 "),
        "declarations": fill("I play ") + word, "digits": fill("9"),
        "lines of answers": fill(word + "\n"), "mixed scripts": fill("СOOPERATE "),
        "long last line": fill("so I play ") + word + ".",
    }


@pytest.mark.parametrize("name", GAME_NAMES)
def test_parsing_a_megabyte_is_fast(name: str) -> None:
    parse = parser(name)
    for label, text in adversarial(name, 1_000_000).items():
        assert len(text) >= 900_000
        start = time.perf_counter()
        parse(text)
        elapsed = time.perf_counter() - start
        assert elapsed < 1.0, f"{name}: {label} took {elapsed:.2f} s"


def test_a_long_last_line_is_read_only_in_its_tail() -> None:
    parse = parser("ipd")
    assert parse("blah " * 200_000 + "\nI play DEFECT") == "DEFECT"
    assert parse("x" * 1_000_000 + ", so I play DEFECT.") == "DEFECT"
    assert parse("x" * 1_000_000 + " so I play DEFECT.") is None  # the clause starts unread
    # the clause leading into the declaration may begin before the tail: not an answer
    assert parse("not " + "x " * MAX_ANSWER_CHARS + "I play DEFECT") is None
    assert parse("not, " + "x " * MAX_ANSWER_CHARS + ", I play DEFECT") == "DEFECT"
    assert parse("DEFECT " * 200_000) is None  # many actions, none declared


def _best_time(fn: Callable[[], object]) -> float:
    # The garbage collector off while timing, as `timeit` does: in a full-suite run one large
    # text took 0.49 s where it takes 0.13 s alone, most likely a collection over the objects
    # earlier tests left alive.
    best = float("inf")
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(5):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
    finally:
        if enabled:
            gc.enable()
    return best


@pytest.mark.parametrize(("scan", "unit"), [
    (vector_mentions, "1,"), (vector_mentions, "1, "), (vector_mentions, "[1, 2, 0] "),
    (vector_mentions, "books=1 "), (vector_mentions, "["), (number_mentions, "1,"),
    (number_mentions, "1.1."), (lambda t: word_mentions(t, {"DEFECT": "DEFECT"}), "DEFECT-"),
])
def test_the_scanners_are_linear(scan: Callable[[str], object], unit: str) -> None:
    """The scanners themselves, on whole texts (parsing gives them at most one line's tail):
    eight times the text takes about eight times as long, not sixty-four. (An 8× size keeps
    the two far apart, so that a loaded machine's timing noise cannot pass for either.)"""
    small, large = unit * (10_000 // len(unit)), unit * (80_000 // len(unit))
    t_small = _best_time(lambda: scan(small))
    t_large = _best_time(lambda: scan(large))
    assert t_large < 24 * t_small + 0.05, (t_small, t_large)
