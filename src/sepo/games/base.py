"""What every game shares: the state of one episode, the record of a round, strategies.

A game is rules and state, nothing else (OpenSpiel's rule). It knows nothing of language
models: it renders the text a player sees and parses text back into an action, and the LM
layer does the rest. Seat 0 is always "the agent" (the player being evaluated or trained),
seat 1 the opponent. Strategies are written seat-agnostic, so any strategy can sit in either
seat (as an opponent, as a demonstrator, or as the agent of `sepo eval --agent`).
"""

from __future__ import annotations

import functools
import random
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

from sepo.games.budget import GameBudget

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
    `demonstrators`, `defaults` and `budget` are data, read from the `<name>.toml` file beside
    the module.
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
    #: Zero-sum: there is no joint gain, so collusion and externality mean nothing and the
    #: report leaves them out.
    zero_sum: ClassVar[bool] = False

    # Filled by the registry from the game's data file.
    pools: dict[str, list[str]]
    demonstrators: dict[str, float]
    defaults: dict[str, Any]
    #: `sepo run`'s stage budgets (`[budget]`; `GENERIC_BUDGET` when the file has none).
    budget: GameBudget
    #: The game's own strategies the population oracle may pick as exploiters (`[oracle]
    #: candidates`; none of the held-out pool: the registry refuses that).
    oracle_candidates: list[str]
    #: Functions ("module:function") that return more candidates and need an optional
    #: package (`[oracle] optional`; IPD: Axelrod strategies).
    oracle_optional: list[str]

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
        """Cost pushed outside the game by this round, a rate in [0, 1] (x, docs/method.md §3.3)."""

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

        The answer convention, the same for every game (`read_answer`; docs/GAMES.md,
        "Parsing answers"): only the LAST non-empty line is read (its last `MAX_ANSWER_CHARS`
        characters, NFKC-normalised), never the rest of the text. It names an action when it
        is either

        - the action alone, e.g. "DEFECT", "**6**", "[1, 0, 2]." (wrapping quotes, `*`,
          backticks and a final `.` or `!` are fine), or
        - a declaration directly followed by the action and nothing but that punctuation:
          "Action: X", "Move: X", "Final answer: X", "I play X", "so I play X", "I choose X",
          "I bid X", "I demand X", "I take X", "I will X", "I'll play X", "my move is X", ...
          (case-insensitive; the SFT reason sentence ends "..., so I play X.").

        It names none (None) when anything else follows the action ("I play DEFECT (not
        COOPERATE)"), when the clause leading into the declaration holds a negation or a
        hypothesis ("I will not play X", "don't play X", "if I play X") or another action,
        when another declaration on the line names a different action, or when a word of the
        line mixes scripts ("СOOPERATE" with a Cyrillic С). Games keep their own vocabulary
        (what a mention of an action is). Never raises and never guesses: the LM layer falls
        back and counts the failure.
        """

    # ------------------------------------------------------- candidate exploiters
    def exploiter_families(self) -> dict[str, Strategy]:
        """Parameterised candidate exploiters of the population oracle beyond the named
        strategies (`sepo.games.candidate_exploiters`), by name: e.g. the members of a family
        of demand schedules. None may play like a held-out strategy (tests/test_oracle.py
        checks behaviour). Cheap to build: no optional package. Default: none."""
        return {}

    def situation(self, state: GameState, seat: int) -> str:
        """One clause on what matters for `seat`'s decision now (its private information and
        the other's last move), e.g. "my value is 4 and the other bid HIGH last round". SFT
        data builds its reason sentences from it."""
        return f"it is round {state.t + 1} of {self.num_rounds}"

    def __repr__(self) -> str:
        return f"<game {self.name}>"


# ------------------------------------------------------------------ capabilities
# Optional powers of a game beyond the rules. A game class declares one by also deriving from
# it; generic code asks `capability(game, Kind)` and never tests a game's name.

#: A tabular policy: information-set key -> probability of that information set's scored
#: action (`PolicyDecision.action`); the other legal action has the rest.
TabularPolicy = dict[str, float]


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """One information set of a tabular policy as a player meets it: in `state`, `seat` acts
    at information set `key` with exactly two legal actions, and the table gives the
    probability of `action`, one of them."""

    key: str
    state: GameState
    seat: int
    action: Action


@dataclass(frozen=True, slots=True)
class PolicyFigure:
    """How the report draws tabular policies against the game's equilibrium: one panel per
    (title, information-set keys), each key's tick text in `labels`."""

    title: str
    ylabel: str
    panels: tuple[tuple[str, tuple[str, ...]], ...]
    labels: Mapping[str, str]
    reference_label: str = "Nash"
    family_label: str = "Nash family"


class ExactSolvable(ABC):
    """Capability: a game whose every policy is a small table (`TabularPolicy`) that can be
    scored exactly. Evaluation then reports the exact exploitability of an agent with such a
    table and adds its exact best response to the held-out pool; the LM agent reads its table
    (`LMAgent.tabular_policy`); training may play against it (`exploit_best_response`); the
    report draws it against Nash. Everything here is plain data: no model is involved."""

    @abstractmethod
    def policy_decisions(self) -> tuple[PolicyDecision, ...]:
        """Every information set of the table, in the table's key order."""

    def strategy_policy(self, strategy: Strategy) -> TabularPolicy | None:
        """The table a strategy of the game plays, or None when it plays none."""
        return None

    @abstractmethod
    def exact_exploitability(self, policy: Mapping[str, float]) -> float:
        """What an exact best responder gains against `policy` per round (0 at a Nash
        equilibrium)."""

    @abstractmethod
    def best_response(self, policy: Mapping[str, float]) -> Strategy:
        """An exact best response to `policy`, as a strategy of the game."""

    def expected_payoffs(self, policy: Mapping[str, float],
                         opponent: Mapping[str, float]) -> tuple[float, float] | None:
        """The agent's and the opponent's exact expected payoff per round when the agent plays
        the table `policy` and the opponent the table `opponent`, seats as the game's episodes
        give them; None where the game does not compute it (no exact pool metrics then)."""
        return None

    @abstractmethod
    def nash_policy(self) -> TabularPolicy:
        """The reference equilibrium the report draws policies against."""

    def nash_family(self) -> dict[str, tuple[float, float]]:
        """Per key, the (lo, hi) range of the probability over the game's equilibria; by
        default the single equilibrium `nash_policy`."""
        return {key: (p, p) for key, p in self.nash_policy().items()}

    def policy_figure(self) -> PolicyFigure:
        """How the report draws the table; by default one panel, keys as tick text."""
        keys = tuple(d.key for d in self.policy_decisions())
        return PolicyFigure(title="the agent's tabular policy against Nash",
                            ylabel="P(scored action)", panels=(("information sets", keys),),
                            labels={k: k for k in keys})


class ExactCredit(ABC):
    """Capability: exact credit for each of the agent's decisions against an opponent that
    plays a table (`ExactSolvable`'s `TabularPolicy`). Training asks for it under
    `exact_credit` (docs/method.md §5.7.1): a decision's advantage is then the exact
    Q(I, a) − V(I) of its information set against the oracle's best response, not a sampled
    episode return. Plain data, like `ExactSolvable`: no model is involved."""

    @abstractmethod
    def round_decisions(self, rnd: Round) -> list[tuple[str, Action]]:
        """The agent's decisions of a finished round, in the order it made them: each one's
        information-set key (a key of the game's tables) and the action it took."""

    @abstractmethod
    def action_advantages(self, policy: Mapping[str, float],
                          opponent: Mapping[str, float]) -> dict[str, dict[Action, float]]:
        """Per information set of the agent, per legal action there: Q(I, a) − V(I), where
        Q(I, a) is the agent's expected margin (its payoff minus the opponent's) in the round,
        given that the round reached I, the agent took a there and played `policy` after, and
        the opponent plays `opponent` throughout (each history in I weighs chance's times the
        opponent's probability of it; where the opponent never lets the agent reach I, chance
        alone), and V(I) is Q's mean under `policy` at I."""

    @abstractmethod
    def decision_reach(self, policy: Mapping[str, float],
                       opponent: Mapping[str, float]) -> dict[str, float]:
        """Per information set of the agent: the probability that a round of play reaches it
        with the agent to move, the agent playing `policy` and the opponent `opponent`
        (`exact_expected` weighs each set's expected credit by it)."""


_Capability = TypeVar("_Capability")


def capability(game: Game, kind: type[_Capability]) -> _Capability | None:
    """`game` seen as the capability `kind` (e.g. `ExactSolvable`) when its class declares
    it, else None."""
    return game if isinstance(game, kind) else None


# ------------------------------------------------------------------ the answer convention
# One convention for every game (see `Game.parse` and docs/GAMES.md, "Parsing answers"): the
# answer is the last non-empty line, and it names an action only as the action alone or as a
# declaration ("Action:", "I play", ...) directly followed by the action. Each game supplies a
# scanner that finds where its actions are written (`Mention`s); `read_answer` applies the rules.

#: How much of the last line is read: its last this-many characters. Four times the longest SFT
#: reason sentence (bargaining's, ~240 characters), and it bounds the work on any input.
MAX_ANSWER_CHARS = 1024

# Characters that may wrap an action or a declaration: whitespace is handled apart; markdown
# bold and code, and quotes (not `_`: it is a word character, "HIGH_BID" is no bid).
# Terminal punctuation may also follow the action.
_OPENERS = frozenset("*`\"'“‘«‹„‚「『")
_CLOSERS = frozenset("*`\"'”’»›」』")
_TERMINAL = frozenset(".!")
_DECORATION = _OPENERS | _CLOSERS
# Where a clause ends: the negation check looks only at the clause leading into a declaration.
# Brackets are not breaks: "I think (not really) I play X" keeps its negation in the clause.
_CLAUSE_BREAKS = frozenset(".!?;:,—–…")

# Declarations, as lower-case word sequences. "I <verb>" needs a verb: a bare "I" would make
# "I pass" (a cut-off "I passed") an answer.
_SUBJECTS = (("i",), ("i", "will"), ("i'll",), ("i", "shall"))
_VERBS = (("play",), ("choose",), ("pick",), ("select",), ("take",), ("bid",), ("demand",),
          ("go", "with"))
_LABELS = ("action", "move", "answer", "bid", "demand", "choice", "decision")
_PHRASES: frozenset[tuple[str, ...]] = frozenset(
    {s + v for s in _SUBJECTS for v in _VERBS} | set(_SUBJECTS[1:])
    | {("my", label, "is") for label in _LABELS} | {("my", "final", "answer", "is")})
#: With a colon after it, a label alone also declares: "Action: DEFECT", "Final answer: 6".
_COLON_PHRASES = _PHRASES | {(label,) for label in _LABELS}
_LONGEST_PHRASE = max(len(p) for p in _COLON_PHRASES)

# Words that make the clause leading into a declaration a negation ("I will not play X",
# "instead of X I play Y") or a hypothesis ("if I play X"); "n't" endings count too.
_NEGATIONS = frozenset({
    "not", "no", "never", "nor", "neither", "none", "nothing", "nobody", "without", "instead",
    "cannot", "dont", "doesnt", "didnt", "wont", "cant", "shouldnt", "wouldnt", "isnt",
    "if", "unless", "whether", "suppose", "supposing", "assuming", "should", "could", "might",
    "maybe", "perhaps"})
_CLAUSE_WORD = re.compile(r"[\w'’]+")
#: One word: letters, digits and `_` ("HIGH_BID" and "_low_" are one word each, not a bid).
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class Mention:
    """Where a game's scanner found an action written: `text[start:end]`, and which action.

    `value` is any hashable naming the action (equal values name the same action; a game may
    use kinds, like Kuhn's passive/aggressive), or None for something written like an action
    that is not one ("[1, 2]", "5.5"): it is never an answer and never agrees with another.
    """

    start: int
    end: int
    value: Hashable | None


def answer_line(text: object) -> tuple[str, bool] | None:
    """The part of the answer that is read: the last non-empty line's last `MAX_ANSWER_CHARS`
    characters, NFKC-normalised, and whether the line was longer (then the tail starts after
    the word that the cut split). None when there is no such line. Linear in the text, without
    regex."""
    if not isinstance(text, str):
        return None
    body = text.rstrip()
    if not body:
        return None
    # The last line lies within the last MAX_ANSWER_CHARS + 1 characters, or is too long.
    line = body[-(MAX_ANSWER_CHARS + 1):].splitlines()[-1]
    truncated = len(line) > MAX_ANSWER_CHARS
    if truncated:
        line = line[-MAX_ANSWER_CHARS:]
        cut = next((i for i, ch in enumerate(line) if not ch.isalnum()), None)
        if cut is None:  # one word longer than the cap: nothing whole to read
            return None
        line = line[cut:]
    return unicodedata.normalize("NFKC", line), truncated


@functools.lru_cache(maxsize=4096)
def _script(ch: str) -> str | None:
    """The script of a letter, from its Unicode name ("CYRILLIC CAPITAL LETTER ES")."""
    if ch.isascii():
        return "LATIN"
    first = unicodedata.name(ch, "").split(" ", 1)[0]
    if first in ("CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA"):
        return "CJK"  # Japanese mixes these within a word
    return None if first in ("", "MODIFIER") else first


def mixes_scripts(text: str) -> bool:
    """Whether some word of `text` mixes letters of two scripts, like "СOOPERATE" with a
    Cyrillic С: a look-alike spelling that must not pass for, or hide, an action."""
    if text.isascii():
        return False
    script: str | None = None
    for ch in text:
        if ch.isalpha():
            s = _script(ch)
            if s is None:
                continue
            if script is None:
                script = s
            elif s != script:
                return True
        elif not ch.isdigit():
            script = None  # a word boundary
    return False


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch in "'’"


def declaration_start(line: str, pos: int) -> int | None:
    """Where the declaration that ends just before `line[pos]` starts, or None if none does.

    Between the declaration and `pos` only wrapping characters (quotes, `*`, backticks),
    whitespace and one colon may stand. Reads at most a few words backwards."""
    j = pos
    while j > 0 and (line[j - 1].isspace() or line[j - 1] in _DECORATION):
        j -= 1
    colon = j > 0 and line[j - 1] == ":"
    if colon:
        j -= 1
        while j > 0 and (line[j - 1].isspace() or line[j - 1] in _DECORATION):
            j -= 1
    words: list[str] = []
    starts: list[int] = []
    k = j
    while len(words) < _LONGEST_PHRASE:
        end = k
        while k > 0 and _is_word_char(line[k - 1]):
            k -= 1
        if k == end:
            break
        words.append(line[k:end].lower().replace("’", "'"))
        starts.append(k)
        gap = k
        while gap > 0 and line[gap - 1].isspace():
            gap -= 1
        if gap == k:  # no space before the word: the phrase cannot go on
            break
        k = gap
    phrases = _COLON_PHRASES if colon else _PHRASES
    for n in range(len(words), 0, -1):
        if tuple(reversed(words[:n])) in phrases:
            return starts[n - 1]
    return None


def _clause_start(line: str, pos: int) -> int:
    k = pos
    while k > 0 and line[k - 1] not in _CLAUSE_BREAKS:
        k -= 1
    return k


def _negated(clause: str) -> bool:
    for word in _CLAUSE_WORD.findall(clause.lower().replace("’", "'")):
        if word in _NEGATIONS or word.endswith("n't"):
            return True
    return False


def read_answer(text: object, scan: Callable[[str], Sequence[Mention]],
                alone: Callable[[str], Hashable | None] | None = None) -> Hashable | None:
    """The value of the action an answer names under the answer convention, or None.

    `scan` finds a game's action mentions in a line; `alone` reads extra forms a game accepts
    only as the whole answer (auction's bare amounts). The rules, on `answer_line(text)`:

    - a word mixing scripts anywhere in it -> None;
    - strip wrapping (quotes, `*`, backticks, whitespace) at both ends and terminal `.`
      and `!` at the end; the last mention must end exactly there, else None;
    - the mention alone is the answer; otherwise a declaration must lead directly into it;
    - the clause leading into the declaration (back to the last `,;:.!?`, dash or `…`) must
      hold no negation or hypothesis word and no mention of a different action;
    - no other declaration on the line may declare a different action.
    """
    read = answer_line(text)
    if read is None:
        return None
    line, truncated = read
    if mixes_scripts(line):
        return None
    end = len(line)
    while end > 0 and (line[end - 1].isspace() or line[end - 1] in _CLOSERS
                       or line[end - 1] in _TERMINAL):
        end -= 1
    start = 0
    while start < end and (line[start].isspace() or line[start] in _OPENERS):
        start += 1
    if start >= end:
        return None
    mentions = scan(line)
    final: Mention | None = None
    for m in mentions:
        if m.end == end and (final is None or m.start < final.start):
            final = m
    if final is None:
        return alone(line[start:end]) if alone is not None else None
    if final.value is None:
        return None
    if final.start <= start:
        return final.value
    decl = declaration_start(line, final.start)
    if decl is None:
        return None
    clause = _clause_start(line, decl)
    if (clause == 0 and truncated) or _negated(line[clause:decl]):
        return None  # the clause may go on before what was read, or it negates
    for m in mentions:
        if m is final or m.start >= final.start or m.value == final.value:
            continue
        if m.end > clause or declaration_start(line, m.start) is not None:
            return None  # another action in the leading clause, or declared elsewhere
    return final.value


def word_mentions(line: str, words: Mapping[str, Hashable]) -> list[Mention]:
    """Mentions of action words (upper-case keys of `words`), as whole words, any case.

    "higher" is not HIGH, "HIGH_BID" and "cooperate2" are one word each, and a hyphen or
    apostrophe joining another word makes a compound that names nothing ("low-ball",
    "medium-rare", "HIGH's")."""
    found: list[Mention] = []
    for m in _WORD.finditer(line):
        value = words.get(m.group().upper())
        if value is None:
            continue
        s, e = m.span()
        if s >= 2 and line[s - 1] in "-'’" and line[s - 2].isalnum():
            continue
        if e + 1 < len(line) and line[e] in "-'’" and line[e + 1].isalnum():
            continue
        found.append(Mention(s, e, value))
    return found


def parse_one_word(text: str, words: Sequence[str]) -> str | None:
    """The word of `words` that the answer names under the answer convention, or None."""
    table = {w.upper(): w for w in words}
    value = read_answer(text, lambda line: word_mentions(line, table))
    return value if isinstance(value, str) else None
