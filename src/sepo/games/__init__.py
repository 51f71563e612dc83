"""The game registry: the built-in games (one line each), then the games of installed plugins.

A game's pools, defaults and stage budgets are in `<name>.toml`, beside the module that defines
its class.
Another installed package adds a game through an entry point of the group `sepo.games`, named
after the game, whose value is the game class ("package.module:Class"); docs/GAMES.md,
"Adding a game". "all" means the built-in games only (`game_names`).
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path

from sepo.errors import MissingDependencyError, SepoError, UnknownNameError
from sepo.games.base import (
    AGENT,
    OPPONENT,
    Action,
    ExactCredit,
    ExactSolvable,
    Game,
    GameState,
    Round,
    Strategy,
    capability,
)
from sepo.games.budget import GENERIC_BUDGET, GameBudget

#: The entry-point group a plugin package registers its games in.
ENTRY_POINT_GROUP = "sepo.games"

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
#: The plugins' entry points by game name, found once per process (None: not looked for yet).
_PLUGINS: dict[str, metadata.EntryPoint] | None = None
#: The sections a game's data file must have.
_SECTIONS = ("pools", "demonstrators", "lambdas")


class GameUnavailableError(SepoError, ImportError):
    """A plugin game that is registered but cannot be loaded (its import, its class or its
    data file failed). Raised only when that game is asked for; `sepo games` lists the others
    and shows this one as unavailable."""


def _origin(ep: metadata.EntryPoint) -> str:
    dist = ep.dist
    return (f"distribution {dist.name!r} {dist.version}" if dist is not None
            else "an unknown distribution")


def _plugins() -> dict[str, metadata.EntryPoint]:
    """The entry points of `ENTRY_POINT_GROUP` by game name; a name that is taken twice is an
    error naming both sources (the modules are not imported here)."""
    global _PLUGINS
    if _PLUGINS is None:
        found: dict[str, metadata.EntryPoint] = {}
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == "all":  # `sepo run all` / `sepo sft-data all` mean the built-ins
                raise SepoError(f"the plugin game 'all' of {_origin(ep)} ({ep.value}) takes "
                                "a reserved name ('all' means every built-in game); rename "
                                "its entry point")
            if ep.name in _GAME_CLASSES:
                raise SepoError(f"the plugin game {ep.name!r} of {_origin(ep)} ({ep.value}) "
                                f"clashes with the built-in game {ep.name!r} "
                                f"({_GAME_CLASSES[ep.name]}); rename its entry point")
            if ep.name in found:
                first = found[ep.name]
                raise SepoError(f"two plugins register the game {ep.name!r}: {_origin(first)} "
                                f"({first.value}) and {_origin(ep)} ({ep.value}); uninstall "
                                "one or rename its entry point")
            found[ep.name] = ep
        _PLUGINS = dict(sorted(found.items()))  # by name, not by where sys.path found them
    return _PLUGINS


def _data_file(cls: type[Game], name: str) -> Traversable:
    """`<name>.toml` in the package of the module that defines `cls` (for a top-level module,
    its directory): built-in games and plugins keep their data the same way."""
    module = sys.modules[cls.__module__]
    package = module.__spec__.parent if module.__spec__ is not None else module.__package__
    where = resources.files(package) if package else Path(module.__file__ or ".").parent
    path = where.joinpath(f"{name}.toml")
    if not path.is_file():
        raise FileNotFoundError(f"no data file {name}.toml beside {cls.__module__} (its pools, "
                                "demonstrators and lambdas)")
    return path


def _load(cls: type[Game], name: str) -> Game:
    game = cls()
    data = tomllib.loads(_data_file(cls, name).read_text(encoding="utf-8"))
    lacking = [s for s in _SECTIONS if not isinstance(data.get(s), dict)]
    if lacking:
        raise ValueError(f"{name}.toml lacks the table(s) {', '.join(lacking)}")
    # A misspelt role ("exploits") would otherwise leave that pool silently empty.
    unknown = sorted(set(data["pools"]) - set(POOL_ROLES))
    if unknown:
        raise ValueError(f"{name}.toml has unknown pools {unknown}; pools: {list(POOL_ROLES)}")
    game.pools = {role: list(data["pools"].get(role, [])) for role in POOL_ROLES}
    game.demonstrators = dict(data["demonstrators"])
    game.defaults = {k: v for k, v in data.items()
                     if k not in ("pools", "demonstrators", "budget", "oracle")}
    oracle = data.get("oracle", {})
    if (not isinstance(oracle, dict) or set(oracle) - {"candidates", "optional"}
            or not all(isinstance(oracle.get(k, []), list) for k in ("candidates", "optional"))
            or not all(isinstance(f, str) and f.count(":") == 1
                       for f in oracle.get("optional", []))):
        raise ValueError(f"{name}.toml: oracle must be a table of candidates (strategy names) "
                         "and optional (\"module:function\" names), both lists")
    game.oracle_candidates = [str(n) for n in oracle.get("candidates", [])]
    game.oracle_optional = list(oracle.get("optional", []))
    held = sorted(set(game.oracle_candidates) & set(game.pools["heldout"]))
    if held:  # the held-out pool is never trained against (docs/method.md §5.7)
        raise ValueError(f"{name}.toml: oracle candidates {held} are in the held-out pool")
    budget = data.get("budget")
    if budget is not None and not isinstance(budget, dict):
        raise ValueError(f"{name}.toml: budget must be a table ([budget])")
    # No table: a game never timed gets the generic budget (sepo.games.budget).
    game.budget = (GameBudget.from_table(budget, f"{name}.toml") if budget is not None
                   else GENERIC_BUDGET)
    named = [*game.demonstrators, *(n for pool in game.pools.values() for n in pool),
             *game.oracle_candidates]
    missing = sorted({n for n in named if n not in game.strategies})
    if missing:  # a data file naming a strategy the module lacks is a bug: fail loudly
        raise ValueError(f"{name}.toml names unknown strategies {missing}")
    return game


def _load_plugin(name: str, ep: metadata.EntryPoint) -> Game:
    """The plugin game `name`, or a one-line `GameUnavailableError` naming its distribution."""
    try:
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Game)):
            raise TypeError(f"{ep.value} is not a subclass of sepo.games.Game")
        if getattr(cls, "name", None) != name:  # records and reports carry `Game.name`
            raise ValueError(f"{ep.value}.name is {getattr(cls, 'name', None)!r}, not the "
                             f"entry point's name {name!r}")
        return _load(cls, name)
    except Exception as err:  # whatever the plugin raises, the other games stay usable
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise GameUnavailableError(f"game {name!r} of {_origin(ep)} ({ep.value}) could not "
                                   f"be loaded: {reason}") from err


def game_names(*, plugins: bool = False) -> list[str]:
    """The built-in games, in order: what "all" means, what `tiny` is built from and what a
    model's vocabulary is checked against, whatever is installed. With `plugins`, then the
    games of installed plugins by name (loadable or not; `get_game` says why one is not)."""
    names = list(_GAME_CLASSES)
    return [*names, *_plugins()] if plugins else names


def get_game(name: str) -> Game:
    """The game called `name` (its pools and defaults loaded), or a clear error.

    A built-in name never looks at plugins, so an installed plugin cannot change or break the
    built-in games."""
    if name not in _GAMES:
        if name in _GAME_CLASSES:
            module, cls = _GAME_CLASSES[name].split(":")
            _GAMES[name] = _load(getattr(importlib.import_module(module), cls), name)
        elif name in _plugins():
            _GAMES[name] = _load_plugin(name, _plugins()[name])
        else:
            raise UnknownNameError("game", name, game_names(plugins=True))
    return _GAMES[name]


def games_with(kind: type) -> list[str]:
    """The built-in games whose class declares the capability `kind` (e.g. `ExactSolvable`),
    in order: what an error about a missing capability lists."""
    return [name for name in game_names() if capability(get_game(name), kind) is not None]


def has_exploiter_library(game: Game) -> bool:
    """Whether the game declares candidate exploiters (`[oracle] candidates` or
    `exploiter_families()`), without importing any optional package."""
    return bool(getattr(game, "oracle_candidates", None) or game.exploiter_families())


def optional_exploiters(game: Game) -> dict[str, Strategy]:
    """The candidates of the functions `[oracle] optional` names, by name; a function whose
    package is not installed (it raises `MissingDependencyError`) adds none."""
    found: dict[str, Strategy] = {}
    for spec in getattr(game, "oracle_optional", []):
        module, function = spec.split(":")
        try:
            strategies = getattr(importlib.import_module(module), function)()
        except MissingDependencyError:
            continue
        found.update((s.name, s) for s in strategies)
    return found


def candidate_exploiters(game: Game, *, optional: bool = True) -> dict[str, Strategy]:
    """The population oracle's library of candidate exploiters, by name and in a fixed order:
    the game's strategies named in `[oracle] candidates`, then `exploiter_families()`, then
    (with `optional`) those of `[oracle] optional` whose package is installed. None is in the
    held-out pool: a data file that names one is refused when loaded, and another candidate
    named like one is an error here (docs/GAMES.md, "Candidate exploiters")."""
    library = {name: game.strategies[name] for name in getattr(game, "oracle_candidates", [])}
    for extra in (game.exploiter_families(), optional_exploiters(game) if optional else {}):
        for name, strategy in extra.items():
            if name in library:
                raise SepoError(f"{game.name}: two candidate exploiters are named {name!r}")
            library[name] = strategy
    held = sorted(set(library) & set(game.pools.get("heldout", [])))
    if held:
        raise SepoError(f"{game.name}: candidate exploiters {held} are in the held-out pool")
    return library


def get_strategy(game: Game, name: str) -> Strategy:
    """A strategy of `game` by name, or a clear error listing the game's strategies."""
    try:
        return game.strategies[name]
    except KeyError:
        raise UnknownNameError(f"{game.name} strategy", name, list(game.strategies)) from None


__all__ = [
    "AGENT",
    "ENTRY_POINT_GROUP",
    "GENERIC_BUDGET",
    "OPPONENT",
    "POOL_ROLES",
    "Action",
    "ExactCredit",
    "ExactSolvable",
    "Game",
    "GameBudget",
    "GameState",
    "GameUnavailableError",
    "Round",
    "Strategy",
    "candidate_exploiters",
    "capability",
    "game_names",
    "games_with",
    "get_game",
    "get_strategy",
    "has_exploiter_library",
    "optional_exploiters",
]
