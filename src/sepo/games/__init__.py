"""The game registry: one line per game. A game's pools and defaults are in `<name>.toml`."""

from __future__ import annotations

import importlib
import tomllib
from importlib import resources

from sepo.errors import UnknownNameError
from sepo.games.base import AGENT, OPPONENT, Action, Game, GameState, Round, Strategy

# name -> "module:class"; imported on first use, so one broken game cannot hide the others.
_GAME_CLASSES: dict[str, str] = {
    "ipd": "sepo.games.ipd:IPDGame",
    "auction": "sepo.games.auction:AuctionGame",
    "negotiation": "sepo.games.negotiation:NegotiationGame",
    "bargaining": "sepo.games.bargaining:BargainingGame",
    "kuhn": "sepo.games.kuhn:KuhnGame",
}

POOL_ROLES = ("train", "exploit", "collusive", "heldout")

_GAMES: dict[str, Game] = {}


def _load(name: str) -> Game:
    module, cls = _GAME_CLASSES[name].split(":")
    game: Game = getattr(importlib.import_module(module), cls)()
    data = tomllib.loads(resources.files("sepo.games").joinpath(f"{name}.toml").read_text())
    game.pools = {role: list(data["pools"].get(role, [])) for role in POOL_ROLES}
    game.demonstrators = dict(data["demonstrators"])
    game.defaults = {k: v for k, v in data.items() if k not in ("pools", "demonstrators")}
    named = [*game.demonstrators, *(n for pool in game.pools.values() for n in pool)]
    missing = sorted({n for n in named if n not in game.strategies})
    if missing:  # a data file naming a strategy the module lacks is a bug: fail loudly
        raise ValueError(f"{name}.toml names unknown strategies {missing}")
    return game


def game_names() -> list[str]:
    return list(_GAME_CLASSES)


def get_game(name: str) -> Game:
    """The game called `name` (its pools and defaults loaded), or a clear error."""
    if name not in _GAME_CLASSES:
        raise UnknownNameError("game", name, game_names())
    if name not in _GAMES:
        _GAMES[name] = _load(name)
    return _GAMES[name]


def get_strategy(game: Game, name: str) -> Strategy:
    """A strategy of `game` by name, or a clear error listing the game's strategies."""
    try:
        return game.strategies[name]
    except KeyError:
        raise UnknownNameError(f"{game.name} strategy", name, list(game.strategies)) from None


__all__ = [
    "AGENT",
    "OPPONENT",
    "POOL_ROLES",
    "Action",
    "Game",
    "GameState",
    "Round",
    "Strategy",
    "game_names",
    "get_game",
    "get_strategy",
]
