"""Held-out IPD adversaries from the Axelrod library (optional: ``pip install "sepo[axelrod]"``).

The Axelrod library (https://axelrod.readthedocs.io) collects some 240 iterated prisoner's
dilemma strategies from the tournament literature. This module wraps any of them as a `sepo`
`Strategy`, so they can extend the IPD held-out pool: adversaries an agent is evaluated
against and never trained against. They are deliberately not registered in ``ipd.toml``: the
package stays optional and the default evaluation does not change when it is installed.

Usage::

    from sepo.evaluation import evaluate
    from sepo.games.axelrod_pool import axelrod_strategy, heldout_extension, with_heldout

    # The ipd game with DEFAULT_HELDOUT (or any Axelrod names) added to its held-out pool:
    report = evaluate(with_heldout(), "TitForTat", episodes=50)
    report["robust"], report["exploit_heldout"]  # now over the Axelrod adversaries too

    # Other Axelrod strategies, by class or display name:
    report = evaluate(with_heldout(names=["ZDExtort2", "Handshake", "Tit For 2 Tats"]), agent)

    # Or play them with the engine directly (`agent`: a Strategy or any Player, e.g. an LM):
    from sepo.engine import play
    from sepo.games import get_game
    records = play(get_game("ipd"), agent, heldout_extension(), seeds=range(50))
    records = play(get_game("ipd"), agent, [axelrod_strategy("Gradual")], seeds=[0])

`with_heldout` returns a copy of the game (the registry's instance is left untouched); names
are Axelrod class names (``"ZDExtort2"``) or display names (``"ZD-Extort-2"``), and the
wrapped strategies are called ``axl.<ClassName>`` in reports.

How a wrapped strategy stays a `sepo` strategy (a pure function of state, seat and randomness):
every decision builds a fresh Axelrod player and replays the episode's history into it
(`strategy()` each past turn, so stateful strategies update exactly as in an Axelrod match,
then the moves actually played are recorded, as Axelrod's own noisy matches do). Its random
generator is seeded once per episode from the episode's seed and the seat (`player_seed`),
not from the seat's `random.Random` stream: that stream has advanced by the time of a later
decision, and the replay must make the same draws at every decision for a stochastic,
stateful strategy to relive its own past. Same episode seed → same draws (common random
numbers: the rollouts of a group face the same opponent randomness); the two seats draw
from different seeds.

Cost: the replay makes decision t cost t + 1 `strategy()` calls plus building the player
(36 calls per 8-round episode). Measured on a shared 2-core CPU box (mean over rounds 1–8):
about 0.5–0.7 ms per decision for five of the default six, 3 ms for BackStabber (Axelrod builds
it with a strategy transformer whose constructor re-reads the class's source code; the same
holds for Alexei, DoubleCrosser, EugineNier, Michaelos, Stalker and two first-tournament
entries), against about 1 µs for a native sepo strategy. Axelrod's Meta* ensembles play a
whole team per decision (~0.5 s). All of it is negligible beside a language model's decision,
except the ensembles. Importing `axelrod` itself is slow (it instantiates every strategy at
import: ~20 s of CPU), so it is imported only when a function here is first called.
"""

from __future__ import annotations

import copy
import functools
import inspect
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sepo.errors import MissingDependencyError, UnknownNameError
from sepo.games.base import Action, Game, GameState, Strategy, derive_seed
from sepo.games.ipd import ACTIONS, PAYOFFS, C, D

if TYPE_CHECKING:  # the import is optional and slow: only for type checkers
    from types import ModuleType

#: Six well-known Axelrod strategies that are not already in sepo's IPD pools, chosen to probe
#: different weaknesses of a trained agent:
#: - ZDExtort2: Press & Dyson's extortionate zero-determinant strategy (stochastic): it
#:   guarantees itself a share of any surplus above mutual defection.
#: - Detective: opens C, D, C, C and exploits an agent that never retaliates (defects forever),
#:   else plays tit for tat.
#: - Gradual: answers the n-th defection with n defections, then two cooperations.
#: - HardTitForTat: defects if the other defected in any of the last three rounds.
#: - BackStabber: forgives three defections, defects forever after the fourth, and defects on
#:   the last two rounds unconditionally (an end-game defector: it knows there are 8 rounds).
#: - SneakyTitForTat: tit for tat that tries one unprovoked defection and repents if punished.
DEFAULT_HELDOUT: tuple[str, ...] = (
    "ZDExtort2", "Detective", "Gradual", "HardTitForTat", "BackStabber", "SneakyTitForTat",
)

#: Candidate exploiters of IPD's population oracle (training, docs/GAMES.md "Candidate
#: exploiters"): deterministic strategies that probe, defect early or defect at the end, none
#: of `DEFAULT_HELDOUT` and none playing like a strategy of IPD's held-out pool (Axelrod's
#: Prober, TitFor2Tats, WinStayLoseShift and SuspiciousTitForTat do; tests/test_oracle.py
#: checks behaviour).
EXPLOITER_CANDIDATES: tuple[str, ...] = (
    "Aggravater", "Bully", "HardProber", "Prober2", "Prober3", "Prober4", "TrickyDefector",
    "CyclerDDC", "CyclerCCD", "Alexei",
)

#: Prefix of a wrapped strategy's name: keeps Axelrod's TitForTat apart from sepo's.
NAME_PREFIX = "axl."

#: Second part of `player_seed`'s derivation ("AXEL"): keeps it apart from the engine's streams.
_AXELROD_STREAM = 0xA4E1

_INSTALL = 'pip install "sepo[axelrod]"  (or: pip install axelrod)'


def _axelrod() -> ModuleType:
    """The `axelrod` module, or a clear error saying how to install it."""
    try:
        import axelrod
    except ImportError as exc:
        raise MissingDependencyError(
            "axelrod", "Held-out IPD adversaries from the Axelrod library", _INSTALL
        ) from exc
    return axelrod


def axelrod_available() -> bool:
    """Whether the optional `axelrod` package can be imported."""
    try:
        _axelrod()
    except MissingDependencyError:
        return False
    return True


@functools.cache
def _usable_classes() -> dict[str, type]:
    """Axelrod strategy classes by class name and by display name.

    Only those that obey Axelrod's rules (`axelrod.strategies`): "cheaters" that inspect or
    manipulate the opponent's source or state need a live Axelrod opponent, not a history.
    """
    axl = _axelrod()
    classes: dict[str, type] = {}
    for cls in axl.strategies:
        classes[cls.__name__] = cls
    for cls in axl.strategies:
        classes.setdefault(cls.name, cls)
    return classes


def axelrod_names() -> list[str]:
    """The class names of every Axelrod strategy that can be wrapped, sorted."""
    return sorted({cls.__name__ for cls in _usable_classes().values()})


def player_seed(state: GameState, seat: int) -> int:
    """The seed of the Axelrod player's random generator in `state`'s episode, for `seat`.

    The same at every decision of an episode (the replay relives the same draws) and a
    function of the episode's seed only (common random numbers). NumPy's legacy
    `RandomState`, which Axelrod uses, takes seeds below 2**32.
    """
    return derive_seed(state.seed, _AXELROD_STREAM, seat) & 0xFFFF_FFFF


class AxelrodStrategy(Strategy):
    """An Axelrod library player as a seat-agnostic `sepo` IPD strategy (see the module doc)."""

    def __init__(self, player_class: type) -> None:
        axl = _axelrod()
        self.player_class = player_class
        # Instance attributes shadow Strategy's class-level name/description: one wrapper class
        # serves every Axelrod strategy.
        self.name = f"{NAME_PREFIX}{player_class.__name__}"  # type: ignore[misc]
        summary = " ".join((inspect.getdoc(player_class) or "").split("\n\n")[0].split())
        self.description = (  # type: ignore[misc]
            f"{player_class.name} (Axelrod library): {summary}" if summary
            else f"{player_class.name} (Axelrod library)"
        )
        self._to_axl = {C: axl.Action.C, D: axl.Action.D}
        self._from_axl = {axl.Action.C: C, axl.Action.D: D}
        # The axelrod game with sepo's IPD payoffs (R, S, T, P from the row player's view).
        self._game = axl.Game(r=PAYOFFS[C, C][0], s=PAYOFFS[C, D][0], t=PAYOFFS[D, C][0],
                              p=PAYOFFS[D, D][0])
        self._mock = axl.MockPlayer

    @property
    def stochastic(self) -> bool:
        return bool(self.player_class.classifier.get("stochastic", False))

    def new_player(self, state: GameState, seat: int) -> Any:
        """A fresh Axelrod player for `seat` in `state`'s episode, before any turn."""
        player = self.player_class()
        player.set_match_attributes(length=state.num_rounds, game=self._game, noise=0)
        player.set_seed(player_seed(state, seat))
        return player

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        mine = [self._to_axl[r.actions[seat]] for r in state.rounds]
        theirs = [self._to_axl[r.actions[1 - seat]] for r in state.rounds]
        player = self.new_player(state, seat)
        # The other seat as Axelrod sees it: its history (and, should a strategy call it, a
        # strategy that replays the moves it made). It never draws, so it needs no seed
        # (seeding builds a NumPy RandomState: the largest cost of a decision).
        other = self._mock(actions=theirs)
        other.set_match_attributes(length=state.num_rounds, game=self._game, noise=0)
        for my_move, their_move in zip(mine, theirs, strict=True):
            player.strategy(other)  # advances the player's internal state and random draws
            player.update_history(my_move, their_move)
            other.update_history(their_move, my_move)
        return self._from_axl[player.strategy(other)]

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable by name (multiprocessing, checkpoints): the axelrod class is found again.
        return (axelrod_strategy, (self.player_class.__name__,))


def axelrod_strategy(name: str) -> AxelrodStrategy:
    """The Axelrod strategy `name` (class name such as "ZDExtort2", or display name such as
    "ZD-Extort-2") as a `sepo` IPD strategy called ``axl.<ClassName>``."""
    classes = _usable_classes()
    key = name.removeprefix(NAME_PREFIX) if isinstance(name, str) else name
    if key not in classes:
        raise UnknownNameError("Axelrod strategy", name, axelrod_names())
    return AxelrodStrategy(classes[key])


def heldout_extension(names: Sequence[str] = DEFAULT_HELDOUT) -> list[Strategy]:
    """The Axelrod strategies `names`, wrapped, as extra held-out IPD adversaries."""
    if isinstance(names, str):  # a lone name would otherwise be read letter by letter
        names = [names]
    strategies: list[Strategy] = [axelrod_strategy(n) for n in names]
    seen: set[str] = set()
    for s in strategies:
        if s.name in seen:
            raise ValueError(f"Axelrod strategy {s.name} is named twice in {list(names)}")
        seen.add(s.name)
    return strategies


def exploiter_candidates(names: Sequence[str] = EXPLOITER_CANDIDATES) -> list[Strategy]:
    """The Axelrod strategies `names`, wrapped, as candidate exploiters of IPD's oracle."""
    overlap = sorted(set(names) & set(DEFAULT_HELDOUT))
    if overlap:
        raise ValueError(f"Axelrod strategies {overlap} are held-out adversaries, not "
                         "candidate exploiters")
    return heldout_extension(names)


def with_heldout(game: Game | None = None,
                 names: Sequence[str] = DEFAULT_HELDOUT) -> Game:
    """A copy of the IPD game whose held-out pool also holds the Axelrod strategies `names`.

    Pass it to `sepo.evaluation.evaluate` (or anything that takes a game) to evaluate against
    them; the registry's own game is not modified. Training reads only the train, exploit and
    collusive pools, so the additions stay held out.
    """
    from sepo.games import get_game  # the registry imports the games, not the other way round

    base = get_game("ipd") if game is None else game
    if base.name != "ipd" or set(base.legal_actions(base.new_state(0), 0)) != set(ACTIONS):
        raise ValueError(f"Axelrod strategies play the iterated prisoner's dilemma, not "
                         f"{base.name!r}")
    extra = heldout_extension(names)
    extended = copy.copy(base)
    extended.strategies = {**base.strategies, **{s.name: s for s in extra}}  # type: ignore[misc]
    extended.pools = {role: list(members) for role, members in base.pools.items()}
    heldout = extended.pools.setdefault("heldout", [])
    heldout.extend(s.name for s in extra if s.name not in heldout)
    return extended


__all__ = [
    "DEFAULT_HELDOUT",
    "EXPLOITER_CANDIDATES",
    "NAME_PREFIX",
    "AxelrodStrategy",
    "axelrod_available",
    "axelrod_names",
    "axelrod_strategy",
    "exploiter_candidates",
    "heldout_extension",
    "player_seed",
    "with_heldout",
]
