"""Exact analysis of per-hand Kuhn poker policies, on OpenSpiel's `kuhn_poker`.

A `KuhnPolicy` gives the probability of the aggressive move (BET, or CALL facing a bet) at each
of the 12 information sets. It is a whole strategy profile of one hand: its opener keys ("J",
"Qpb", ...) are the strategy of the seat that opens, its second-player keys ("Kp", "Jb", ...)
that of the other. In the repeated game both seats open equally often, so a player's
exploitability is the game's NashConv/2 with the same policy in both seats: the mean, over the
two seats, of what a best responder gains against it per hand. References: Nash 0, AlwaysBet
1/3, TightPassive 1/4, LooseAggressive 1/6, AlwaysPass 1.

Key mapping: OpenSpiel's information-state string of a player is its card (0 = J, 1 = Q,
2 = K) followed by the moves so far (p pass, b bet), so "Qpb" is "1pb"; action 0 is the passive
move (pass or fold), action 1 the aggressive one (bet or call). OpenSpiel's player 0 opens.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from sepo.errors import MissingDependencyError, UnknownNameError
from sepo.games.kuhn import (
    CARDS,
    OPENER_HISTORIES,
    POLICY_KEYS,
    KuhnPolicy,
    TablePolicyStrategy,
    check_policy,
)

__all__ = [
    "OPENER_KEYS",
    "POLICY_KEYS",
    "SECOND_KEYS",
    "BestResponse",
    "KuhnPolicy",
    "best_response_policy",
    "expected_value",
    "exploitability",
    "key_of_infostate",
    "openspiel_infostate",
    "per_hand_value",
    "policy_of",
]

#: Keys of the seat that opens the hand (OpenSpiel player 0) and of the other (player 1).
OPENER_KEYS: tuple[str, ...] = tuple(k for k in POLICY_KEYS if k[1:] in OPENER_HISTORIES)
SECOND_KEYS: tuple[str, ...] = tuple(k for k in POLICY_KEYS if k[1:] not in OPENER_HISTORIES)
_PASSIVE, _AGGRESSIVE = 0, 1  # OpenSpiel's kuhn_poker actions


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
def _game() -> Any:
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
    tabular = TabularPolicy(_game())
    for keys, table in ((OPENER_KEYS, opener), (SECOND_KEYS, second)):
        for key in keys:
            p = table[key]
            tabular.policy_for_key(openspiel_infostate(key))[:] = (1.0 - p, p)
    return tabular


def exploitability(policy: Mapping[str, float]) -> float:
    """NashConv/2 of `policy` played in both seats: the mean per-hand gain of an exact best
    responder over the two seats. 0 exactly at a Nash equilibrium; at most 2."""
    from open_spiel.python.algorithms import exploitability as os_exploitability

    return float(os_exploitability.exploitability(_game(), _tabular(policy, policy)))


def expected_value(opener: Mapping[str, float], second: Mapping[str, float]) -> float:
    """The exact expected payoff per hand of the opening seat when it plays `opener`'s opener
    keys and the other seat plays `second`'s second-player keys (cards dealt uniformly).
    Nash against Nash gives the game value, −1/18."""
    from open_spiel.python.algorithms import expected_game_score

    tabular = _tabular(opener, second)
    values = expected_game_score.policy_value(_game().new_initial_state(), [tabular, tabular])
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
        br = BestResponsePolicy(_game(), player, tabular)
        for key in keys:
            action = br.best_response_action(openspiel_infostate(key))
            response[key] = 1.0 if action == _AGGRESSIVE else 0.0
    return check_policy(response)


class BestResponse(TablePolicyStrategy):
    """The exact best response to a given per-hand policy: the held-out exploiter of an agent,
    built at evaluation time from the agent's own policy (so it is in no pool's data file).
    Against it the agent loses `exploitability(policy)` per hand, in expectation."""

    name = "BestResponse"
    description = "the exact best response to the agent's per-hand policy"

    def __init__(self, policy: Mapping[str, float]) -> None:
        self.target = check_policy(policy)
        super().__init__(best_response_policy(self.target))


def policy_of(player: object) -> KuhnPolicy | None:
    """The per-hand Kuhn policy of a player, when it has one.

    A table strategy (or a `StrategyPlayer` wrapping one) gives its table; any object with a
    `kuhn_policy()` method (the LM agent) gives what that returns; anything else gives None.
    """
    strategy = getattr(player, "strategy", player)  # StrategyPlayer wraps a strategy
    if isinstance(strategy, TablePolicyStrategy):
        return strategy.policy()
    reader = getattr(player, "kuhn_policy", None)
    if callable(reader):
        return check_policy(reader())
    return None
