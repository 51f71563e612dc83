"""Axelrod library strategies as optional held-out IPD adversaries.

Skipped when `axelrod` is not installed, except the test of the missing-dependency message.
Importing axelrod takes seconds of CPU (it instantiates all its strategies), paid once.
"""

from __future__ import annotations

import pickle
import random
import sys
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sepo.engine import Episode, play
from sepo.errors import MissingDependencyError, UnknownNameError
from sepo.games import axelrod_pool as pool
from sepo.games import get_game, get_strategy
from sepo.games.base import Action, Game, GameState, Strategy
from sepo.games.ipd import ACTIONS, C, D

IPD = get_game("ipd")


@pytest.fixture(scope="module")
def axl() -> ModuleType:
    """The axelrod module; the test is skipped when it is not installed."""
    return pytest.importorskip("axelrod")


class Scripted(Strategy):
    """Plays a fixed sequence of moves, whatever happens (a test agent)."""

    name = "Scripted"

    def __init__(self, moves: list[str]) -> None:
        self.moves = moves

    def choose(self, game: Game, state: GameState, seat: int, rng: random.Random) -> Action:
        return self.moves[state.t]


def played(history: list[tuple[str, str]]) -> GameState:
    state = IPD.new_state(0)
    for a0, a1 in history:
        IPD.apply(state, 0, a0)
        IPD.apply(state, 1, a1)
    return state


histories = st.lists(st.tuples(st.sampled_from(ACTIONS), st.sampled_from(ACTIONS)), max_size=7)


# ------------------------------------------------------------------ missing package
def test_missing_axelrod_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "axelrod", None)  # `import axelrod` now raises ImportError
    pool._usable_classes.cache_clear()
    try:
        assert not pool.axelrod_available()
        for call in (lambda: pool.axelrod_strategy("TitForTat"), pool.heldout_extension,
                     pool.axelrod_names, pool.with_heldout):
            with pytest.raises(MissingDependencyError, match=r'pip install "sepo\[axelrod\]"'):
                call()
    finally:
        pool._usable_classes.cache_clear()


# ------------------------------------------------------------------ names
def test_names_lookup_and_errors(axl: ModuleType) -> None:
    assert pool.axelrod_available()
    tft = pool.axelrod_strategy("TitForTat")
    assert tft.name == "axl.TitForTat" and tft.player_class is axl.TitForTat
    assert "Tit For Tat (Axelrod library)" in tft.description
    assert pool.axelrod_strategy("Tit For Tat").player_class is axl.TitForTat  # display name
    assert pool.axelrod_strategy("axl.Grudger").player_class is axl.Grudger  # its own name
    with pytest.raises(UnknownNameError, match="Did you mean 'TitForTat'"):
        pool.axelrod_strategy("TitForTatt")
    # a "cheater" that inspects its opponent's source needs a live Axelrod opponent
    with pytest.raises(UnknownNameError, match="unknown Axelrod strategy 'Darwin'"):
        pool.axelrod_strategy("Darwin")
    names = pool.axelrod_names()
    assert "Darwin" not in names and {"TitForTat", *pool.DEFAULT_HELDOUT} <= set(names)
    assert names == sorted(names) and len(names) > 200


def test_default_heldout_extension(axl: ModuleType) -> None:
    extension = pool.heldout_extension()
    assert 4 <= len(extension) <= 6 == len(pool.DEFAULT_HELDOUT)
    names = [s.name for s in extension]
    assert names == [f"axl.{n}" for n in pool.DEFAULT_HELDOUT]
    # new adversaries: none is (a copy of) a strategy sepo already has
    assert not set(names) & set(IPD.strategies)
    assert not set(pool.DEFAULT_HELDOUT) & set(IPD.strategies)
    assert all(isinstance(s, Strategy) and s.description for s in extension)
    assert [s.name for s in pool.heldout_extension("Gradual")] == ["axl.Gradual"]
    with pytest.raises(ValueError, match="named twice"):
        pool.heldout_extension(["Gradual", "axl.Gradual"])


# ------------------------------------------------------------------ same behaviour as sepo's
EQUIVALENTS = [
    ("TitForTat", "TitForTat"), ("Grudger", "GrimTrigger"), ("WinStayLoseShift", "Pavlov"),
    ("SuspiciousTitForTat", "SuspiciousTitForTat"), ("TitFor2Tats", "TitForTwoTats"),
    ("Prober", "Prober"), ("Cooperator", "AlwaysCooperate"), ("Defector", "AlwaysDefect"),
]


@pytest.mark.parametrize(("axelrod_name", "sepo_name"), EQUIVALENTS)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories, seat=st.sampled_from([0, 1]))
def test_wrapped_strategy_matches_sepo_on_random_histories(
        axl: ModuleType, axelrod_name: str, sepo_name: str,
        history: list[tuple[str, str]], seat: int) -> None:
    wrapped = pool.axelrod_strategy(axelrod_name)
    native = get_strategy(IPD, sepo_name)
    state = played(history)
    expected = native.choose(IPD, state, seat, random.Random(0))
    assert wrapped.choose(IPD, state, seat, random.Random(0)) == expected


@pytest.mark.parametrize(("axelrod_name", "sepo_name"), EQUIVALENTS)
def test_wrapped_strategy_plays_sepo_episodes_identically(
        axl: ModuleType, axelrod_name: str, sepo_name: str) -> None:
    wrapped = pool.axelrod_strategy(axelrod_name)
    native = get_strategy(IPD, sepo_name)
    agents = [get_strategy(IPD, n) for n in ("Mixed", "AlternatingDefect", "TitForTat")]
    for agent in agents:
        got = play(IPD, agent, [wrapped], seeds=[0, 1])
        want = play(IPD, agent, [native], seeds=[0, 1])
        assert [r.rounds for r in got] == [r.rounds for r in want]
        got = play(IPD, wrapped, [agent], seeds=[0, 1])  # the wrapper in the agent's seat
        want = play(IPD, native, [agent], seeds=[0, 1])
        assert [r.rounds for r in got] == [r.rounds for r in want]


# ------------------------------------------------------------------ full episodes
@pytest.mark.parametrize(
    ("agent", "opponent", "moves", "totals"),
    [
        # Detective opens C D C C; TFT retaliated in round 3, so Detective plays TFT after:
        # CC, CD, DC, CC, then CC x4: 3+0+5+3+12 = 23 each
        ("TitForTat", "Detective", "CDCCCCCC", (23.0, 23.0)),
        # Detective against a cooperator that never retaliates: defects from round 5 on
        ("AlwaysCooperate", "Detective", "CDCCDDDD", (3 + 0 + 3 + 3 + 0, 3 + 5 + 3 + 3 + 20)),
        # BackStabber knows the match has 8 rounds: it defects on the last two
        # TFT: CC x6, then CD (0/5), DD (1/1): 18+0+1 = 19 against 18+5+1 = 24
        ("TitForTat", "BackStabber", "CCCCCCDD", (19.0, 24.0)),
        # HardTitForTat against D C D C ...: C, then D for good (a D in its last 3 rounds)
        ("AlternatingDefect", "HardTitForTat", "CDDDDDDD", (5 + 0 + 1 + 0 + 1 + 0 + 1 + 0,
                                                           0 + 5 + 1 + 5 + 1 + 5 + 1 + 5)),
    ],
)
def test_full_episodes_exact_totals(axl: ModuleType, agent: str, opponent: str, moves: str,
                                    totals: tuple[float, float]) -> None:
    for rec in play(IPD, get_strategy(IPD, agent), [pool.axelrod_strategy(opponent)],
                    seeds=[0, 1]):
        assert rec.opponent == f"axl.{opponent}"
        assert "".join(r.actions[1][0] for r in rec.rounds) == moves
        assert (rec.total(0), rec.total(1)) == totals


def test_deterministic_by_seed_with_a_stochastic_strategy(axl: ModuleType) -> None:
    extort = pool.axelrod_strategy("ZDExtort2")
    assert extort.stochastic
    opponents = [extort, pool.axelrod_strategy("Gradual")]
    mixed = get_strategy(IPD, "Mixed")
    seeds = list(range(16))
    first = play(IPD, mixed, opponents, seeds)
    again = play(IPD, mixed, opponents, seeds)
    assert [r.rounds for r in first] == [r.rounds for r in again]
    # the extortioner's randomness varies across seeds (16 episodes are not all the same)
    assert len({tuple(r.actions for r in rec.rounds) for rec in first[:16]}) > 1
    # as the agent, too
    assert [r.rounds for r in play(IPD, extort, [mixed], seeds)] == \
        [r.rounds for r in play(IPD, extort, [mixed], seeds)]


def test_common_random_numbers_opponent_draws_do_not_depend_on_the_agent(axl: ModuleType) -> None:
    # ZD-Extort-2 is memory-one: after the same last round it cooperates with the same
    # probability, and with common random numbers it makes the same draw, so two agents that
    # played the same first rounds see the same extortioner moves in the next round.
    extort = pool.axelrod_strategy("ZDExtort2")
    for seed in range(10):
        a = play(IPD, Scripted([C, C, C, D, D, C, C, C]), [extort], [seed])[0]
        b = play(IPD, Scripted([C, C, C, D, C, D, D, D]), [extort], [seed])[0]
        assert [r.actions[1] for r in a.rounds[:5]] == [r.actions[1] for r in b.rounds[:5]]


@pytest.mark.parametrize("name", ["ZDExtort2", "Gradual", "BackStabber", "SneakyTitForTat",
                                  "Calculator", "FirstByJoss"])
def test_replay_relives_an_axelrod_match_exactly(axl: ModuleType, name: str) -> None:
    """The wrapper, rebuilt and replayed at every decision, plays exactly as one Axelrod player
    seeded with `player_seed` does over a whole match (stochastic and stateful ones too)."""
    rng = random.Random(name)
    for seed in range(6):
        agent_moves = [rng.choice(ACTIONS) for _ in range(8)]
        (rec,) = play(IPD, Scripted(agent_moves), [pool.axelrod_strategy(name)], [seed])
        # the same match played by Axelrod's own rules, one player object throughout
        state = Episode(IPD, Scripted(agent_moves), pool.axelrod_strategy(name), seed).state
        player = getattr(axl, name)()
        player.set_match_attributes(length=8, game=axl.Game(), noise=0)
        player.set_seed(pool.player_seed(state, 1))
        other = axl.MockPlayer(actions=[axl.Action.C if m == C else axl.Action.D
                                        for m in agent_moves])
        for _ in range(8):
            mine, theirs = player.strategy(other), other.strategy(player)
            player.update_history(mine, theirs)
            other.update_history(theirs, mine)
        expected = ["COOPERATE" if a == axl.Action.C else "DEFECT" for a in player.history]
        assert [r.actions[1] for r in rec.rounds] == expected
        assert [r.actions[0] for r in rec.rounds] == agent_moves


# The deterministic ones of DEFAULT_HELDOUT (ZDExtort2 is stochastic: its two seats draw from
# different seeds, so they follow the same law with other draws).
@pytest.mark.parametrize("name", ["Detective", "Gradual", "HardTitForTat", "BackStabber",
                                  "SneakyTitForTat"])
def test_deterministic_wrappers_are_seat_agnostic(axl: ModuleType, name: str) -> None:
    wrapped = pool.axelrod_strategy(name)
    assert not wrapped.stochastic
    rng = random.Random(7)
    for _ in range(30):
        history = [(rng.choice(ACTIONS), rng.choice(ACTIONS)) for _ in range(rng.randrange(8))]
        as_seat0 = wrapped.choose(IPD, played(history), 0, random.Random(0))
        as_seat1 = wrapped.choose(IPD, played([(b, a) for a, b in history]), 1,
                                  random.Random(0))
        assert as_seat0 == as_seat1 in ACTIONS


# ------------------------------------------------------------------ evaluation
def test_with_heldout_extends_a_copy_of_the_game(axl: ModuleType) -> None:
    before = {role: list(m) for role, m in IPD.pools.items()}
    game = pool.with_heldout()
    assert game is not IPD and game.name == "ipd"
    assert IPD.pools == before and not any(n.startswith("axl.") for n in IPD.strategies)
    assert game.pools["heldout"] == [*before["heldout"],
                                     *(f"axl.{n}" for n in pool.DEFAULT_HELDOUT)]
    for role in ("train", "exploit", "collusive"):  # never trained against
        assert game.pools[role] == before[role]
    for name in game.pools["heldout"]:
        assert get_strategy(game, name).name == name
    with pytest.raises(ValueError, match="not 'auction'"):
        pool.with_heldout(get_game("auction"))


def test_evaluate_against_the_extended_heldout_pool(axl: ModuleType) -> None:
    from sepo.evaluation import evaluate

    game = pool.with_heldout(names=["Defector", "Cooperator"])
    report = evaluate(game, "AlwaysCooperate", episodes=2, n_boot=20, roles=["heldout"])
    # against the 5 built-in held-out strategies and the 2 added ones
    opponents = {rec.opponent for rec in report.records}
    assert {"axl.Defector", "axl.Cooperator"} <= opponents and len(opponents) == 7
    for rec in report.records:
        if rec.opponent == "axl.Defector":
            assert (rec.total(0), rec.total(1)) == (0.0, 40.0)
        if rec.opponent == "axl.Cooperator":
            assert (rec.total(0), rec.total(1)) == (24.0, 24.0)


def test_pickles_by_name(axl: ModuleType) -> None:
    wrapped = pool.axelrod_strategy("ZDExtort2")
    clone = pickle.loads(pickle.dumps(wrapped))
    assert clone.name == wrapped.name and clone.player_class is wrapped.player_class
    state = played([(C, D), (D, D), (C, C)])
    assert clone.choose(IPD, state, 1, random.Random(0)) == \
        wrapped.choose(IPD, state, 1, random.Random(0))
