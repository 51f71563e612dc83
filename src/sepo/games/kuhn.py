"""Kuhn poker: 6 hands, sequential moves; who acts first alternates, the agent opens hand 1.

Standard Kuhn poker: a deck of three cards J < Q < K; each hand both players ante 1 and get one
private card (the third is unused). The opener may PASS or BET 1; facing a bet a player may
CALL or FOLD. A pass after a pass (check-down) goes to showdown for 1, a called bet to
showdown for 2, and a fold gives the bettor 1. Payoffs are per hand, ±1 or ±2.

A round of the repeated game is a hand: `Round.actions[seat]` is the tuple of that seat's moves,
`Round.info` holds `cards` (agent's, opponent's), `first` (the seat that opened) and `history`,
the hand's moves in order as letters: p PASS, b BET, c CALL, f FOLD (e.g. "pbc").

Per-hand policies (`KuhnPolicy`) give, at each of the 12 information sets, the probability of
the aggressive move (BET, or CALL when facing a bet). An information set is keyed by the card and
the moves so far this hand, in OpenSpiel's letters (p pass, b bet): "K" for the opener, "Qp"
and "Qb" for the second player after a pass or facing a bet, "Jpb" for the opener facing a bet
after check-bet. The game evaluates such a policy exactly, on OpenSpiel's `kuhn_poker` (the
`ExactSolvable` capability; "Exact analysis" below, also importable as `sepo.kuhn_exact`).
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sepo.errors import MissingDependencyError, SepoError, UnknownNameError
from sepo.games.base import (
    AGENT,
    OPPONENT,
    Action,
    ExactCredit,
    ExactSolvable,
    Game,
    GameState,
    PolicyDecision,
    PolicyFigure,
    Round,
    Strategy,
    read_answer,
    word_mentions,
)

CARDS = ("J", "Q", "K")
_RANK = {card: rank for rank, card in enumerate(CARDS)}
PASS, BET, CALL, FOLD = "PASS", "BET", "CALL", "FOLD"
MOVES = (PASS, BET, CALL, FOLD)
_LETTER = {PASS: "p", BET: "b", CALL: "c", FOLD: "f"}
_WORD = {letter: word for word, letter in _LETTER.items()}
#: Hand histories (in `Round.info["history"]` letters) at which a hand is over.
TERMINAL_HISTORIES = frozenset({"pp", "bc", "bf", "pbc", "pbf"})

# The parser's words by kind. An illegal Kuhn move maps to the legal one of the same kind
# (docs/method.md §6): BET facing a bet is a CALL, FOLD with no bet facing is a PASS, CHECK is
# a PASS.
PASSIVE_WORDS = ("PASS", "CHECK", "FOLD")
AGGRESSIVE_WORDS = ("BET", "CALL", "RAISE")
_PASSIVE, _AGGRESSIVE = "passive", "aggressive"
_KINDS = {**{w: _PASSIVE for w in PASSIVE_WORDS}, **{w: _AGGRESSIVE for w in AGGRESSIVE_WORDS}}

#: A per-hand policy: information-set key -> probability of the aggressive move.
KuhnPolicy = dict[str, float]
#: Moves so far this hand at each decision point (OpenSpiel letters): the opener acts at "" and
#: "pb", the second player at "p" and "b".
OPENER_HISTORIES = ("", "pb")
SECOND_HISTORIES = ("p", "b")
#: The 12 information sets, in a fixed order: opener first, then second player.
POLICY_KEYS: tuple[str, ...] = tuple(
    card + hist for hist in ("", "p", "b", "pb") for card in CARDS
)


def check_policy(policy: Mapping[str, float]) -> KuhnPolicy:
    """The policy as a `KuhnPolicy` in canonical key order, or a clear error.

    It must give every one of the 12 keys (no more) a probability in [0, 1].
    """
    unknown = sorted(set(policy) - set(POLICY_KEYS))
    if unknown:
        raise UnknownNameError("Kuhn information set", unknown[0], POLICY_KEYS)
    missing = [k for k in POLICY_KEYS if k not in policy]
    if missing:
        raise SepoError(f"Kuhn policy lacks information sets {missing}; it needs all of "
                        f"{', '.join(POLICY_KEYS)}")
    out: KuhnPolicy = {}
    for key in POLICY_KEYS:
        p = float(policy[key])
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise SepoError(f"Kuhn policy gives {key!r} probability {policy[key]!r}; "
                            "probabilities must lie in [0, 1]")
        out[key] = p
    return out


def mover(opener: int, i: int) -> int:
    """The seat making move `i` (0-based) of a hand opened by `opener`: moves alternate."""
    return opener if i % 2 == 0 else 1 - opener


def hand_payoffs(cards: tuple[str, str], opener: int, history: str) -> tuple[float, float]:
    """Payoffs by seat of a finished hand: `cards` by seat, `history` in p/b/c/f letters."""
    if history not in TERMINAL_HISTORIES:
        raise ValueError(f"Kuhn hand {history!r} is not over; finished hands are "
                         f"{', '.join(sorted(TERMINAL_HISTORIES))}")
    if history.endswith("f"):
        # The player who folded made the last move; the bettor wins the antes.
        winner, stake = 1 - mover(opener, len(history) - 1), 1.0
    else:
        winner = AGENT if _RANK[cards[AGENT]] > _RANK[cards[OPPONENT]] else OPPONENT
        stake = 2.0 if history.endswith("c") else 1.0
    return (stake, -stake) if winner == AGENT else (-stake, stake)


def _deal(rng: random.Random) -> tuple[str, str]:
    """Two different cards, by seat."""
    agent_card, opponent_card = rng.sample(CARDS, 2)
    return agent_card, opponent_card


def is_showdown(history: str) -> bool:
    """Whether the hand ended with the cards shown (nobody folded)."""
    return history in TERMINAL_HISTORIES and not history.endswith("f")


# ------------------------------------------------------------------ state
@dataclass(slots=True)
class KuhnState(GameState):
    #: Cards of every hand, by seat, dealt in `new_state`.
    deals: tuple[tuple[str, str], ...] = ()
    #: The seat that opens hand 1 (then it alternates).
    first: int = AGENT
    #: The current hand's moves so far, in order (the opener's first).
    moves: list[str] = field(default_factory=list)

    @property
    def opener(self) -> int:
        """The seat that opens the current hand."""
        return self.first if self.t % 2 == 0 else 1 - self.first

    @property
    def history(self) -> str:
        """The current hand's moves as letters (p/b/c/f)."""
        return "".join(_LETTER[m] for m in self.moves)

    @property
    def cards(self) -> tuple[str, str]:
        """The current hand's cards, by seat."""
        return self.deals[self.t]


def _kuhn_state(state: GameState) -> KuhnState:
    if not isinstance(state, KuhnState):
        raise TypeError(f"expected a Kuhn state, got {type(state).__name__}")
    return state


def facing_bet(state: KuhnState) -> bool:
    return bool(state.moves) and state.moves[-1] == BET


def infoset_key(state: GameState, seat: int) -> str:
    """The `KuhnPolicy` key of `seat`'s decision now: its card and the moves so far."""
    s = _kuhn_state(state)
    return s.cards[seat] + s.history


# ------------------------------------------------------------------ strategies
class TablePolicyStrategy(Strategy):
    """A strategy defined by a per-hand policy table: at each decision it takes the aggressive
    move (BET, or CALL facing a bet) with the table's probability, drawing one number from the
    seat's random stream. Every Kuhn strategy is one; `policy()` exposes the table so that its
    exploitability can be computed exactly."""

    name = "TablePolicy"
    description = "plays a per-hand policy table"

    def __init__(self, table: Mapping[str, float], name: str | None = None,
                 description: str | None = None) -> None:
        self._table = check_policy(table)
        if name is not None:
            self.name = name
        if description is not None:
            self.description = description

    def policy(self) -> KuhnPolicy:
        return dict(self._table)

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        s = _kuhn_state(state)
        # Always draw, so the seat's stream advances the same way whatever the table says.
        aggressive = rng.random() < self._table[infoset_key(s, seat)]
        if facing_bet(s):
            return CALL if aggressive else FOLD
        return BET if aggressive else PASS


def _table(**by_key: float) -> KuhnPolicy:
    """A full table from the keys given (the rest 0)."""
    return {k: float(by_key.get(k, 0.0)) for k in POLICY_KEYS}


def _by_card(j: float, q: float, k: float) -> dict[str, float]:
    """The same probability at every information set of a card."""
    return {key: {"J": j, "Q": q, "K": k}[key[0]] for key in POLICY_KEYS}


def nash_policy(alpha: float = 1 / 3) -> KuhnPolicy:
    """The Kuhn equilibrium of parameter α in [0, 1/3] (Kuhn 1950).

    Opener: J bets α, Q checks and calls a check-raise with α + 1/3, K bets 3α and always
    calls; J folds to a check-raise. Second player: after a check bets K always, J with 1/3 and
    Q never; facing a bet calls K always, Q with 1/3, never J. The opener's value is −1/18.
    """
    if not 0.0 <= alpha <= 1 / 3 + 1e-12:
        raise SepoError(f"Kuhn Nash alpha must lie in [0, 1/3], got {alpha!r}")
    alpha = min(alpha, 1 / 3)
    return _table(J=alpha, Q=0.0, K=3 * alpha, Jpb=0.0, Qpb=alpha + 1 / 3, Kpb=1.0,
                  Jp=1 / 3, Qp=0.0, Kp=1.0, Jb=0.0, Qb=1 / 3, Kb=1.0)


class Nash(TablePolicyStrategy):
    name = "Nash"
    description = "the exact equilibrium of the α-family (α = 1/3 by default)"

    def __init__(self, alpha: float = 1 / 3) -> None:
        super().__init__(nash_policy(alpha))
        self.alpha = alpha
        if abs(alpha - 1 / 3) > 1e-12:
            self.name = f"Nash(alpha={alpha:g})"


class TightPassive(TablePolicyStrategy):
    name = "TightPassive"
    description = "bets and calls only with K"

    def __init__(self) -> None:
        super().__init__(_by_card(0.0, 0.0, 1.0))


class LooseAggressive(TablePolicyStrategy):
    name = "LooseAggressive"
    description = "bets and calls with Q or K, passes and folds with J"

    def __init__(self) -> None:
        super().__init__(_by_card(0.0, 1.0, 1.0))


class AlwaysBet(TablePolicyStrategy):
    name = "AlwaysBet"
    description = "always bets, and calls every bet"

    def __init__(self) -> None:
        super().__init__(_by_card(1.0, 1.0, 1.0))


class AlwaysPass(TablePolicyStrategy):
    name = "AlwaysPass"
    description = "always passes, and folds to every bet"

    def __init__(self) -> None:
        super().__init__(_by_card(0.0, 0.0, 0.0))


class TightValue(TablePolicyStrategy):
    """Nash (α = 1/3) without the bluffs: bets K for value, never bets J, and defends Q against
    bets at the equilibrium rates (2/3 against a check-raise, 1/3 as the second player)."""

    name = "TightValue"
    description = "bets K for value, never bluffs, calls K always and Q at equilibrium rates"

    def __init__(self) -> None:
        super().__init__(_table(K=1.0, Kp=1.0, Kb=1.0, Kpb=1.0, Qb=1 / 3, Qpb=2 / 3))


class PotControl(TablePolicyStrategy):
    name = "PotControl"
    description = "bets K, passes Q, bluffs J with p=0.2, calls only with K"

    def __init__(self) -> None:
        super().__init__(_table(J=0.2, Jp=0.2, K=1.0, Kp=1.0, Kb=1.0, Kpb=1.0))


class RandomLegal(TablePolicyStrategy):
    name = "RandomLegal"
    description = "each legal move with probability 1/2"

    def __init__(self) -> None:
        super().__init__(_by_card(0.5, 0.5, 0.5))


class AlwaysPassQueen(TablePolicyStrategy):
    """Nash (α = 1/3) except that it never puts a chip in with Q: it checks Q (as Nash does) and
    folds Q to any bet, where Nash calls at 2/3 (opener) or 1/3 (second player). A small,
    exploitable leak (a bettor may bluff J freely into a Q) as a rare demonstrator."""

    name = "AlwaysPassQueen"
    description = "plays Nash but always passes or folds with Q"

    def __init__(self) -> None:
        table = nash_policy(1 / 3)
        table.update({k: 0.0 for k in POLICY_KEYS if k.startswith("Q")})
        super().__init__(table)


# held-out adversaries: never used in training
class Bluffer(TablePolicyStrategy):
    """Polarised and over-bluffing: bets every J and K whenever it may bet, checks Q, and calls
    only with K. Beats passive players, loses to players who call down with Q."""

    name = "Bluffer"
    description = "bets every J and K, checks Q, calls only with K"

    def __init__(self) -> None:
        super().__init__(_table(J=1.0, Jp=1.0, K=1.0, Kp=1.0, Kb=1.0, Kpb=1.0))


class CallingStation(TablePolicyStrategy):
    """Never bets, always calls: punishes bluffs, never pays off value."""

    name = "CallingStation"
    description = "never bets, calls every bet"

    def __init__(self) -> None:
        super().__init__(_table(Jb=1.0, Qb=1.0, Kb=1.0, Jpb=1.0, Qpb=1.0, Kpb=1.0))


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Nash(), TightPassive(), LooseAggressive(), AlwaysBet(), AlwaysPass(), TightValue(),
        PotControl(), RandomLegal(), AlwaysPassQueen(), Bluffer(), CallingStation(),
    )
}


# ------------------------------------------------------------------ exact analysis
# Exact analysis of per-hand policies, on OpenSpiel's `kuhn_poker` (imported on first use: it
# is heavy, and only exact figures need it). It lives with the rules, not above them, because
# the game's `ExactSolvable` capability answers with it and a game may import nothing above
# the games layer.
#
# A `KuhnPolicy` is a whole strategy profile of one hand: its opener keys ("J", "Qpb", ...) are
# the strategy of the seat that opens, its second-player keys ("Kp", "Jb", ...) that of the
# other. In the repeated game both seats open equally often, so a player's exploitability is
# the game's NashConv/2 with the same policy in both seats: the mean, over the two seats, of
# what a best responder gains against it per hand. References: Nash 0, AlwaysBet 1/3,
# TightPassive 1/4, LooseAggressive 1/6, AlwaysPass 1.
#
# Key mapping: OpenSpiel's information-state string of a player is its card (0 = J, 1 = Q,
# 2 = K) followed by the moves so far (p pass, b bet), so "Qpb" is "1pb"; action 0 is the
# passive move (pass or fold), action 1 the aggressive one (bet or call). OpenSpiel's player 0
# opens.

#: Keys of the seat that opens the hand (OpenSpiel player 0) and of the other (player 1).
OPENER_KEYS: tuple[str, ...] = tuple(k for k in POLICY_KEYS if k[1:] in OPENER_HISTORIES)
SECOND_KEYS: tuple[str, ...] = tuple(k for k in POLICY_KEYS if k[1:] not in OPENER_HISTORIES)
_OS_PASSIVE, _OS_AGGRESSIVE = 0, 1  # OpenSpiel's kuhn_poker actions


def openspiel_infostate(key: str) -> str:
    """OpenSpiel's information-state string of one of our keys: "Qpb" -> "1pb"."""
    if key not in POLICY_KEYS:
        raise UnknownNameError("Kuhn information set", key, POLICY_KEYS)
    return str(CARDS.index(key[0])) + key[1:]


def key_of_infostate(infostate: str) -> str:
    """Our key of an OpenSpiel information-state string: "1pb" -> "Qpb"."""
    key = CARDS[int(infostate[0])] + infostate[1:] if infostate[:1] in ("0", "1", "2") else ""
    if key not in POLICY_KEYS:
        raise UnknownNameError("OpenSpiel kuhn_poker information state", infostate,
                               [openspiel_infostate(k) for k in POLICY_KEYS])
    return key


@functools.cache
def _openspiel_game() -> Any:
    try:
        import pyspiel
    except ImportError as exc:
        raise MissingDependencyError("open_spiel", "Kuhn exact exploitability",
                                     "pip install open_spiel") from exc
    return pyspiel.load_game("kuhn_poker")


def _tabular(opener: Mapping[str, float], second: Mapping[str, float]) -> Any:
    """An OpenSpiel TabularPolicy: player 0 plays `opener`'s opener keys, player 1 `second`'s
    second-player keys."""
    from open_spiel.python.policy import TabularPolicy

    opener, second = check_policy(opener), check_policy(second)
    tabular = TabularPolicy(_openspiel_game())
    for keys, table in ((OPENER_KEYS, opener), (SECOND_KEYS, second)):
        for key in keys:
            p = table[key]
            tabular.policy_for_key(openspiel_infostate(key))[:] = (1.0 - p, p)
    return tabular


def exploitability(policy: Mapping[str, float]) -> float:
    """NashConv/2 of `policy` played in both seats: the mean per-hand gain of an exact best
    responder over the two seats. 0 exactly at a Nash equilibrium; at most 2."""
    from open_spiel.python.algorithms import exploitability as os_exploitability

    return float(os_exploitability.exploitability(_openspiel_game(), _tabular(policy, policy)))


def expected_value(opener: Mapping[str, float], second: Mapping[str, float]) -> float:
    """The exact expected payoff per hand of the opening seat when it plays `opener`'s opener
    keys and the other seat plays `second`'s second-player keys (cards dealt uniformly).
    Nash against Nash gives the game value, −1/18."""
    from open_spiel.python.algorithms import expected_game_score

    tabular = _tabular(opener, second)
    values = expected_game_score.policy_value(_openspiel_game().new_initial_state(),
                                              [tabular, tabular])
    return float(values[0])


def per_hand_value(player: Mapping[str, float], other: Mapping[str, float]) -> float:
    """`player`'s exact expected payoff per hand in the repeated game, where the two seats open
    equally often (6 hands: 3 each)."""
    return (expected_value(player, other) - expected_value(other, player)) / 2.0


def best_response_policy(policy: Mapping[str, float]) -> KuhnPolicy:
    """The exact best response to `policy` in each seat, as a deterministic `KuhnPolicy`: its
    opener keys answer `policy`'s second-player keys and vice versa.

    Ties (information sets that `policy` never lets the responder reach, or where both moves
    are worth the same) go to the passive move, OpenSpiel's first action: deterministic.
    """
    from open_spiel.python.algorithms.best_response import BestResponsePolicy

    tabular = _tabular(policy, policy)
    response: KuhnPolicy = {}
    for player, keys in ((0, OPENER_KEYS), (1, SECOND_KEYS)):
        br = BestResponsePolicy(_openspiel_game(), player, tabular)
        for key in keys:
            action = br.best_response_action(openspiel_infostate(key))
            response[key] = 1.0 if action == _OS_AGGRESSIVE else 0.0
    return check_policy(response)


def _hand_margin(cards: tuple[str, str], opener: int, history: str, policy: KuhnPolicy,
                 opponent: KuhnPolicy) -> float:
    """The agent's (seat 0) expected payoff minus the opponent's over the rest of a hand from
    `history`, the agent playing `policy` and the opponent `opponent`."""
    if history in TERMINAL_HISTORIES:
        mine, theirs = hand_payoffs(cards, opener, history)
        return mine - theirs
    seat = mover(opener, len(history))
    table = policy if seat == AGENT else opponent
    p = table[cards[seat] + history]
    aggressive, passive = ("c", "f") if history.endswith("b") else ("b", "p")
    return (p * _hand_margin(cards, opener, history + aggressive, policy, opponent)
            + (1.0 - p) * _hand_margin(cards, opener, history + passive, policy, opponent))


def _history_probability(card: str, other: str, opener: int, history: str,
                         policy: KuhnPolicy | None, opponent: KuhnPolicy) -> float:
    """The probability of a hand's moves `history`, the agent holding `card` and the opponent
    `other`: the opponent's moves by `opponent`, the agent's by `policy` (None: left out)."""
    probability = 1.0
    for i, letter in enumerate(history):
        agent_moves = mover(opener, i) != OPPONENT
        if agent_moves and policy is None:
            continue
        table, held = (policy, card) if agent_moves else (opponent, other)
        assert table is not None
        aggressive = table[held + history[:i]]
        probability *= aggressive if letter in "bc" else 1.0 - aggressive
    return probability


def action_margins(policy: Mapping[str, float],
                   opponent: Mapping[str, float]) -> dict[str, dict[Action, float]]:
    """Per information set of the agent and per legal move there, the agent's exact expected
    margin (its payoff minus the opponent's) in the hand, given the set was reached: the
    opponent's card is weighted by chance (uniform over the two other cards) times the
    opponent's probability of the moves so far; after the move the agent plays `policy`. A set
    that `opponent` never lets the agent reach weighs the two cards equally. The same table
    serves both seats, as everywhere here (its opener keys for the seat that opens)."""
    policy, opponent = check_policy(policy), check_policy(opponent)
    margins: dict[str, dict[Action, float]] = {}
    for key in POLICY_KEYS:
        card, history = key[0], key[1:]
        opener = AGENT if history in OPENER_HISTORIES else OPPONENT
        weights = {other: _history_probability(card, other, opener, history, None, opponent)
                   for other in CARDS if other != card}
        total = sum(weights.values())
        if total <= 0.0:
            weights, total = dict.fromkeys(weights, 1.0), float(len(weights))
        moves = ((CALL, "c"), (FOLD, "f")) if history.endswith("b") else ((BET, "b"), (PASS, "p"))
        margins[key] = {
            move: sum(w * _hand_margin((card, other), opener, history + letter, policy, opponent)
                      for other, w in weights.items()) / total
            for move, letter in moves}
    return margins


def decision_reach(policy: Mapping[str, float],
                   opponent: Mapping[str, float]) -> dict[str, float]:
    """Per information set of the agent: the probability that a hand of play reaches it with
    the agent to move, the agent playing `policy` and the opponent `opponent` (the agent
    opens half the hands, as in an episode, whose openers alternate; the deal is uniform).
    Their sum is the expected number of agent decisions per hand."""
    policy, opponent = check_policy(policy), check_policy(opponent)
    reach: dict[str, float] = {}
    for key in POLICY_KEYS:
        card, history = key[0], key[1:]
        opener = AGENT if history in OPENER_HISTORIES else OPPONENT
        total = sum(_history_probability(card, other, opener, history, policy, opponent)
                    for other in CARDS if other != card)
        # 1/2 (the agent's seat) x 1/3 (its card) x 1/2 (the other card)
        reach[key] = total / 12.0
    return reach


def round_decisions(rnd: Round) -> list[tuple[str, Action]]:
    """The agent's (seat 0) decisions of a finished hand: (information-set key, move)."""
    cards, opener, history = rnd.info["cards"], rnd.info["first"], rnd.info["history"]
    return [(cards[AGENT] + history[:i], _WORD[letter]) for i, letter in enumerate(history)
            if mover(opener, i) == AGENT]


class BestResponse(TablePolicyStrategy):
    """The exact best response to a given per-hand policy: the held-out exploiter of an agent,
    built at evaluation time from the agent's own policy (so it is in no pool's data file).
    Against it the agent loses `exploitability(policy)` per hand, in expectation."""

    name = "BestResponse"
    description = "the exact best response to the agent's per-hand policy"

    def __init__(self, policy: Mapping[str, float]) -> None:
        self.target = check_policy(policy)
        super().__init__(best_response_policy(self.target))


# ------------------------------------------------------------------ the game
def _signed(x: float) -> str:
    return f"{x:+g}" if x else "0"


#: The report's figure of per-hand policies: the 12 information sets by the seat that acts.
_POLICY_FIGURE = PolicyFigure(
    title="Kuhn poker: the agent's per-hand policy against Nash "
          "(first-decision prompts, both seats)",
    ylabel="P(BET), or P(CALL) facing a bet",
    panels=(("opening the hand (first seat)", ("J", "Q", "K", "Jpb", "Qpb", "Kpb")),
            ("second to act (second seat)", ("Jp", "Qp", "Kp", "Jb", "Qb", "Kb"))),
    labels={"J": "J open", "Q": "Q open", "K": "K open",
            "Jpb": "J vs raise", "Qpb": "Q vs raise", "Kpb": "K vs raise",
            "Jp": "J vs pass", "Qp": "Q vs pass", "Kp": "K vs pass",
            "Jb": "J vs bet", "Qb": "Q vs bet", "Kb": "K vs bet"},
    reference_label="Nash (the game's α)",
)


class KuhnGame(Game, ExactSolvable, ExactCredit):
    actions_help = "PASS | BET, or CALL | FOLD when facing a bet"
    name = "kuhn"
    title = "Kuhn poker"
    num_rounds = 6
    max_payoff = 2.0
    simultaneous = False
    zero_sum = True
    strategies: ClassVar[dict[str, Strategy]] = STRATEGIES

    def new_state(self, seed: int, first: int = AGENT) -> KuhnState:
        """Deal every hand of the episode from `seed`; `first` is the seat that opens hand 1
        (the agent in play; the opponent when reading second-player information sets)."""
        if first not in (AGENT, OPPONENT):
            raise ValueError(f"first must be a seat, {AGENT} or {OPPONENT}; got {first!r}")
        rng = random.Random(seed)
        deals = tuple(_deal(rng) for _ in range(self.num_rounds))
        return KuhnState(seed=seed, num_rounds=self.num_rounds, deals=deals, first=first)

    def to_act(self, state: GameState) -> tuple[int, ...]:
        s = _kuhn_state(state)
        if s.done:
            return ()
        # Moves alternate, the opener's first; a finished hand is resolved at once.
        return (mover(s.opener, len(s.moves)),)

    def legal_actions(self, state: GameState, seat: int) -> list[Action]:
        s = _kuhn_state(state)
        if seat not in self.to_act(s):
            return []
        return [CALL, FOLD] if facing_bet(s) else [PASS, BET]

    def apply(self, state: GameState, seat: int, action: Action) -> None:
        s = _kuhn_state(state)
        if s.done:
            raise ValueError("the Kuhn episode is over")
        if seat not in self.to_act(s):
            raise ValueError(f"seat {seat} is not to act in this Kuhn hand")
        legal = self.legal_actions(s, seat)
        if action not in legal:
            raise ValueError(f"illegal Kuhn move {action!r} now; legal: {', '.join(legal)}")
        s.moves.append(action)
        history = s.history
        if history in TERMINAL_HISTORIES:
            opener = s.opener
            by_seat = [tuple(m for i, m in enumerate(s.moves) if mover(opener, i) == who)
                       for who in (AGENT, OPPONENT)]
            info = {"cards": s.cards, "first": opener, "history": history}
            s.rounds.append(Round((by_seat[0], by_seat[1]),
                                  hand_payoffs(s.cards, opener, history), info))
            s.moves.clear()

    def externality(self, rnd: Round) -> float:
        return 0.0  # zero-sum: nothing is pushed outside the game

    def collusion(self, rnd: Round) -> float | None:
        return None  # zero-sum: there is no joint gain to collude on

    # ------------------------------------------------------------- policy reading
    def infoset_key(self, state: GameState, seat: int) -> str:
        """The `KuhnPolicy` key of `seat`'s decision now (its card and this hand's moves)."""
        return infoset_key(state, seat)

    def state_for_infoset(self, key: str) -> tuple[KuhnState, int]:
        """A state with no earlier hands in which the returned seat (the agent) is to act at
        information set `key`: it holds the key's card and the hand's moves so far are the
        key's. For second-player keys the opponent opens the hand. The opponent's card is the
        lowest card other than the agent's; the agent cannot see it."""
        if key not in POLICY_KEYS:
            raise UnknownNameError("Kuhn information set", key, POLICY_KEYS)
        card, history = key[0], key[1:]
        first = AGENT if history in OPENER_HISTORIES else OPPONENT
        state = self.new_state(0, first=first)
        other = next(c for c in CARDS if c != card)
        state.deals = ((card, other), *state.deals[1:])
        for letter in history:
            (to_move,) = self.to_act(state)
            self.apply(state, to_move, _WORD[letter])
        return state, AGENT

    # ------------------------------------------------------------- ExactSolvable
    def policy_decisions(self) -> tuple[PolicyDecision, ...]:
        """The 12 information sets (`POLICY_KEYS` order), each from the seat that acts there
        in a hand with no earlier hands (`state_for_infoset`); the table scores the aggressive
        move."""
        decisions = []
        for key in POLICY_KEYS:
            state, seat = self.state_for_infoset(key)
            decisions.append(PolicyDecision(key, state, seat,
                                            CALL if facing_bet(state) else BET))
        return tuple(decisions)

    def strategy_policy(self, strategy: Strategy) -> KuhnPolicy | None:
        return strategy.policy() if isinstance(strategy, TablePolicyStrategy) else None

    def exact_exploitability(self, policy: Mapping[str, float]) -> float:
        return exploitability(policy)

    def best_response(self, policy: Mapping[str, float]) -> BestResponse:
        return BestResponse(policy)

    def expected_payoffs(self, policy: Mapping[str, float],
                         opponent: Mapping[str, float]) -> tuple[float, float]:
        value = per_hand_value(check_policy(policy), check_policy(opponent))
        return value, -value  # zero-sum

    # ------------------------------------------------------------- ExactCredit
    def round_decisions(self, rnd: Round) -> list[tuple[str, Action]]:
        return round_decisions(rnd)

    def action_advantages(self, policy: Mapping[str, float],
                          opponent: Mapping[str, float]) -> dict[str, dict[Action, float]]:
        policy = check_policy(policy)
        out: dict[str, dict[Action, float]] = {}
        for key, q in action_margins(policy, opponent).items():
            # The table's probability is the aggressive move's (BET, or CALL facing a bet).
            aggressive, passive = (CALL, FOLD) if CALL in q else (BET, PASS)
            value = policy[key] * q[aggressive] + (1.0 - policy[key]) * q[passive]
            out[key] = {move: margin - value for move, margin in q.items()}
        return out

    def decision_reach(self, policy: Mapping[str, float],
                       opponent: Mapping[str, float]) -> dict[str, float]:
        return decision_reach(policy, opponent)

    def nash_policy(self) -> KuhnPolicy:
        return nash_policy(1 / 3)  # the module function, at the `Nash` strategy's α

    def nash_family(self) -> dict[str, tuple[float, float]]:
        # The equilibrium family is linear in α ∈ [0, 1/3]: its ends bound it.
        ends = nash_policy(0.0), nash_policy(1 / 3)
        return {k: (min(ends[0][k], ends[1][k]), max(ends[0][k], ends[1][k]))
                for k in POLICY_KEYS}

    def policy_figure(self) -> PolicyFigure:
        return _POLICY_FIGURE

    # ------------------------------------------------------------- text
    def system_prompt(self) -> str:
        return (
            f"You are playing Kuhn poker against another player for {self.num_rounds} hands. "
            "The deck has three cards: J, Q and K (K is highest, J lowest). Each hand both "
            "players put 1 chip in the pot and each gets one private card; the third card is "
            "not used. Players move in turn, and who moves first alternates every hand.\n"
            "Moves: with no bet facing you, PASS or BET (add 1 chip); facing a bet, CALL (add "
            "1 chip) or FOLD (give up the pot).\n"
            "How a hand ends:\n"
            "- both PASS: showdown, the higher card wins 1\n"
            "- a BET is CALLED: showdown, the higher card wins 2\n"
            "- a player FOLDS to a BET: the player who bet wins 1, and no cards are shown\n"
            "Your goal is to win chips. End your answer with your move alone on the last line."
        )

    def _hand_moves(self, moves: list[str] | tuple[str, ...], opener: int, seat: int) -> str:
        return ", ".join(f"{'you' if mover(opener, i) == seat else 'other'} {m}"
                         for i, m in enumerate(moves))

    def user_prompt(self, state: GameState, seat: int) -> str:
        """Earlier hands first, then the hand being played; the private card comes last.

        Why the card is last: the decision depends on it, and a small model pre-trained on
        random play (where the card never matters) learns to read it far more easily a few
        tokens before the answer. With the card on the first line, `tiny`'s SFT stayed
        card-blind (the same action probabilities for J, Q and K to two decimals after 226
        steps); with it last, card-dependent play appeared within ~120 steps
        (research/2026-11-22-kuhn-sft-card.md).
        """
        s = _kuhn_state(state)
        if s.done:
            return (f"The game is over. Score: you {s.score(seat):g}, "
                    f"other {s.score(1 - seat):g}.")
        lines = [f"Hand {s.t + 1} of {self.num_rounds}. "
                 f"Score: you {s.score(seat):g}, other {s.score(1 - seat):g}."]
        if s.rounds:
            lines.append("Previous hands:")
            for i, r in enumerate(s.rounds, 1):
                mine, theirs = r.info["cards"][seat], r.info["cards"][1 - seat]
                shown = theirs if is_showdown(r.info["history"]) else "hidden (no showdown)"
                moves = [_WORD[c] for c in r.info["history"]]
                lines.append(f"hand {i}: your card {mine}, other's card {shown}; "
                             f"{self._hand_moves(moves, r.info['first'], seat)} "
                             f"(you {_signed(r.payoffs[seat])}, "
                             f"other {_signed(r.payoffs[1 - seat])})")
        else:
            lines.append("No earlier hands.")
        lines.append("This hand: you act first." if s.opener == seat
                     else "This hand: the other player acts first.")
        if s.moves:
            lines.append(f"So far: {self._hand_moves(s.moves, s.opener, seat)}.")
        else:
            lines.append("No moves yet.")
        lines.append(f"Legal moves: {', '.join(self.legal_actions(s, seat))}.")
        lines.append("End your answer with your move on the last line.")
        lines.append(f"Your card: {s.cards[seat]}.")
        return "\n".join(lines)

    def format_action(self, action: Action) -> str:
        return str(action)

    def situation(self, state: GameState, seat: int) -> str:
        s = _kuhn_state(state)
        if s.done:
            return "the game is over"
        mine = f"I hold the {s.cards[seat]}"
        history = s.history
        if history == "":
            return f"{mine} and I act first this hand"
        if history == "p":
            return f"{mine} and the other passed"
        if history == "b":
            return f"{mine} and the other bet"
        return f"{mine}, I passed and the other bet"

    def parse(self, text: str, state: GameState, seat: int) -> Action | None:
        """A legal move from free text, under the answer convention (`Game.parse`).

        PASS, CHECK and FOLD are passive, BET, CALL and RAISE aggressive (whole words, any
        case); a word maps to the legal move of its kind (BET facing a bet is a CALL). Words of
        one kind agree with each other, so "Facing a bet I will call" is a CALL; a line whose
        declaration is led into by the other kind is not an answer.
        """
        if not isinstance(state, KuhnState):
            return None
        legal = self.legal_actions(state, seat)
        if not legal:
            return None
        kind = read_answer(text, lambda line: word_mentions(line, _KINDS))
        if kind is None:
            return None
        aggressive = kind == _AGGRESSIVE
        if facing_bet(state):
            return CALL if aggressive else FOLD
        return BET if aggressive else PASS
