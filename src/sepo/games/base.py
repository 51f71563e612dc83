"""What every game shares: the state of one episode, the record of a round, strategies.

A game is rules and state, nothing else (OpenSpiel's rule). It knows nothing of language
models: it renders the text a player sees and parses text back into an action, and the LM
layer does the rest. Seat 0 is always "the agent" (the player being evaluated or trained),
seat 1 the opponent. Strategies are written seat-agnostic, so any strategy can sit in either
seat (as an opponent, as a demonstrator, or as the agent of `sepo eval --agent`).
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

AGENT, OPPONENT = 0, 1

#: An action: a word such as "COOPERATE" or "BET", an int demand, or a tuple of ints.
Action = Any


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers with NumPy's SeedSequence.

    Deterministic across processes and machines (unlike Python's salted `hash`, one of the
    paper's defects), and well mixed, so nearby seeds give unrelated streams.
    """
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFF for p in parts]).generate_state(
        2, np.uint32
    ).view(np.uint64)[0] >> np.uint64(1))


#: Random streams of an episode: chance, then one per seat. Episodes with the same seed see
#: the same chance and the same opponent randomness (common random numbers).
CHANCE_STREAM = 0


def seat_stream(seat: int) -> int:
    return 1 + seat


@dataclass(slots=True)
class Round:
    """One round (for Kuhn: one hand) of a repeated game, as it happened.

    `actions[seat]` is what that seat did: one action in simultaneous games, a tuple of moves
    in a Kuhn hand. `info` holds the round's private information, revealed after the fact
    (auction values, cards, who moved first), which metrics such as allocative efficiency need.
    """

    actions: tuple[Action, Action]
    payoffs: tuple[float, float]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class GameState:
    """The state of one episode. Games subclass it to add their chance draws and round state."""

    seed: int
    num_rounds: int
    rounds: list[Round] = field(default_factory=list)
    #: Simultaneous games: actions chosen so far this round, by seat.
    pending: dict[int, Action] = field(default_factory=dict)

    @property
    def t(self) -> int:
        """Index of the current round (0-based)."""
        return len(self.rounds)

    @property
    def done(self) -> bool:
        return len(self.rounds) >= self.num_rounds

    def score(self, seat: int) -> float:
        return float(sum(r.payoffs[seat] for r in self.rounds))


class Strategy(ABC):
    """A rule-based player: a pure function of the game state, its seat and its random stream."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abstractmethod
    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        """The action this strategy takes in `state` from `seat`."""

    def __repr__(self) -> str:
        return self.name


class Game(ABC):
    """Rules, chance, text and parser of one two-player repeated game.

    Subclasses set the class attributes and implement the abstract methods; `pools`,
    `demonstrators` and `defaults` are data, read from the `<name>.toml` file beside the module.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    num_rounds: ClassVar[int]
    max_payoff: ClassVar[float]
    simultaneous: ClassVar[bool] = True
    #: How actions are written, for people and for `sepo games` (e.g. "COOPERATE | DEFECT").
    actions_help: ClassVar[str]
    #: Every strategy of the game, by name (pool membership is in the data file).
    strategies: ClassVar[dict[str, Strategy]]

    # Filled by the registry from the game's data file.
    pools: dict[str, list[str]]
    demonstrators: dict[str, float]
    defaults: dict[str, Any]

    @property
    def scale(self) -> float:
        """s = 3 / max_payoff, the cross-game scale of the Safety objective."""
        return 3.0 / self.max_payoff

    # ----------------------------------------------------------------- rules
    @abstractmethod
    def new_state(self, seed: int) -> GameState:
        """A fresh episode; all chance is drawn here from `seed`'s chance stream."""

    def to_act(self, state: GameState) -> tuple[int, ...]:
        """Seats that must act now; () once the episode is over."""
        if state.done:
            return ()
        return tuple(s for s in (AGENT, OPPONENT) if s not in state.pending)

    @abstractmethod
    def legal_actions(self, state: GameState, seat: int) -> list[Action]:
        """Every legal action of `seat` now (at most a few hundred)."""

    @abstractmethod
    def apply(self, state: GameState, seat: int, action: Action) -> None:
        """Play a legal action; resolves the round when it is complete."""

    # -------------------------------------------------------------- safety notions
    @abstractmethod
    def externality(self, rnd: Round) -> float:
        """Cost pushed outside the game by this round, a rate in [0, 1] (SPEC §3 x)."""

    @abstractmethod
    def collusion(self, rnd: Round) -> float | None:
        """Harmful coordination by the agent (seat 0) in this round against a collusive
        partner, in [0, 1]; None where the round does not count (e.g. an auction value-2 round).
        """

    # ----------------------------------------------------------------- text
    @abstractmethod
    def system_prompt(self) -> str:
        """Rules and payoff table, the same for every round and seat."""

    @abstractmethod
    def user_prompt(self, state: GameState, seat: int) -> str:
        """Round, private information, history, scores and legal actions as `seat` sees them."""

    @abstractmethod
    def format_action(self, action: Action) -> str:
        """The canonical text of an action, as a player should write it."""

    @abstractmethod
    def parse(self, text: str, state: GameState, seat: int) -> Action | None:
        """A legal action read from free text, or None when the text names none.

        Strict: the last non-empty line first, then the whole text; whole words only. Never
        raises and never guesses: the LM layer falls back and counts the failure.
        """

    def situation(self, state: GameState, seat: int) -> str:
        """One clause on what matters for `seat`'s decision now (its private information and
        the other's last move), e.g. "my value is 4 and the other bid HIGH last round". SFT
        data builds its reason sentences from it."""
        return f"it is round {state.t + 1} of {self.num_rounds}"

    def __repr__(self) -> str:
        return f"<game {self.name}>"


# ------------------------------------------------------------------ parsing helpers
_WORD_CACHE: dict[tuple[str, ...], re.Pattern[str]] = {}


def last_line_then_whole(text: str) -> list[str]:
    """The parser's search order: the last non-empty line, then the whole text."""
    if not isinstance(text, str):
        return []
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return [lines[-1], text] if lines else []


def find_words(text: str, words: Sequence[str]) -> list[str]:
    """The distinct words of `words` that occur in `text` as whole words, case-insensitive.

    "higher" does not contain HIGH, "below" does not contain LOW. Letters, digits and `_` count
    as word characters, so "HIGH_BID" is not HIGH either.
    """
    key = tuple(words)
    pattern = _WORD_CACHE.get(key)
    if pattern is None:
        alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        pattern = re.compile(rf"(?<![\w])({alternatives})(?![\w])", re.IGNORECASE)
        _WORD_CACHE[key] = pattern
    found = {m.group(1).upper() for m in pattern.finditer(text)}
    return [w for w in words if w.upper() in found]


def parse_one_word(text: str, words: Sequence[str]) -> str | None:
    """The single word of `words` that the text names (last line, then whole text).

    A place that names two different words is ambiguous and does not count.
    """
    for place in last_line_then_whole(text):
        found = find_words(place, words)
        if len(found) == 1:
            return found[0]
    return None
