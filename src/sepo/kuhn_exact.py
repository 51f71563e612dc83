"""Exact analysis of per-hand Kuhn poker policies, on OpenSpiel's `kuhn_poker`.

The solver lives with the game, in `sepo.games.kuhn` ("Exact analysis"), because the game's
`ExactSolvable` capability answers with it and a game may import nothing above the games
layer. This module keeps the import path `sepo.kuhn_exact` for scripts and notes, and adds
`policy_of`, which reads a Kuhn policy from any player.

A `KuhnPolicy` gives the probability of the aggressive move (BET, or CALL facing a bet) at each
of the 12 information sets. A player's exploitability is the game's NashConv/2 with the same
policy in both seats. References: Nash 0, AlwaysBet 1/3, TightPassive 1/4, LooseAggressive
1/6, AlwaysPass 1.
"""

from __future__ import annotations

from sepo.games import get_game
from sepo.games.kuhn import (
    OPENER_KEYS,
    POLICY_KEYS,
    SECOND_KEYS,
    BestResponse,
    KuhnPolicy,
    TablePolicyStrategy,
    best_response_policy,
    check_policy,
    expected_value,
    exploitability,
    key_of_infostate,
    openspiel_infostate,
    per_hand_value,
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


def policy_of(player: object) -> KuhnPolicy | None:
    """The per-hand Kuhn policy of a player, when it has one.

    A table strategy (or a `StrategyPlayer` wrapping one) gives its table; any object with a
    `tabular_policy(game)` method (the LM agent) gives what that returns for Kuhn; anything
    else gives None.
    Generic code uses `sepo.evaluation.read_tabular_policy`, which works for any game with
    the `ExactSolvable` capability.
    """
    strategy = getattr(player, "strategy", player)  # StrategyPlayer wraps a strategy
    if isinstance(strategy, TablePolicyStrategy):
        return strategy.policy()
    reader = getattr(player, "tabular_policy", None)
    if callable(reader):
        return check_policy(reader(get_game("kuhn")))
    return None
