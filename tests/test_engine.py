"""The lock-step engine: batching, common random numbers, determinism, records."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from sepo.engine import (
    Decision,
    DecisionRequest,
    Engine,
    Episode,
    EpisodeRecord,
    StrategyPlayer,
    play,
)
from sepo.games import get_game
from sepo.games.base import AGENT, OPPONENT, Strategy

IPD = get_game("ipd")
KUHN = get_game("kuhn")


class RecordingPlayer:
    """Plays a strategy per game and records every call it gets, checking lock-step: each call
    must hold every live episode that waits on this player's seat, and nothing else."""

    def __init__(self, by_game: dict[str, Strategy], engine_ref: list[Engine],
                 name: str = "recorder") -> None:
        self.players = {g: StrategyPlayer(s) for g, s in by_game.items()}
        self.engine_ref = engine_ref
        self.name = name
        self.calls: list[list[DecisionRequest]] = []

    def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        self.calls.append(list(requests))
        if self.engine_ref:
            waiting = {id(e) for e in self.engine_ref[0].episodes
                       if not e.done and AGENT in e.game.to_act(e.state)}
            assert {id(r.episode) for r in requests} == waiting
        return [self.players[r.game.name].decide([r])[0] for r in requests]


def moves(record: EpisodeRecord, seat: int) -> list:
    return [r.actions[seat] for r in record.rounds]


def test_each_step_is_one_batched_call_with_every_live_episode() -> None:
    ref: list[Engine] = []
    agent = RecordingPlayer({"ipd": IPD.strategies["TitForTat"]}, ref)
    episodes = [Episode(IPD, agent, IPD.strategies[o], seed)
                for o in ("Mixed", "AlwaysDefect", "GrimTrigger") for seed in range(4)]
    engine = Engine(episodes)
    ref.append(engine)
    made = []
    while n := engine.step():
        made.append(n)
    # IPD is simultaneous: one step per round, 12 decisions each.
    assert made == [12] * 8
    assert len(agent.calls) == 8 == engine.steps
    assert all(len(call) == 12 for call in agent.calls)


def test_kuhn_steps_hold_every_episode_waiting_on_the_agent() -> None:
    ref: list[Engine] = []
    agent = RecordingPlayer({"kuhn": KUHN.strategies["Nash"]}, ref)
    episodes = [Episode(KUHN, agent, KUHN.strategies[o], seed)
                for o in ("Nash", "AlwaysBet", "TightPassive") for seed in range(5)]
    engine = Engine(episodes)
    ref.append(engine)
    records = engine.run()  # RecordingPlayer asserts lock-step at every call
    # A hand takes one or two agent decisions; one call per step, none empty.
    decisions = sum(len(r.decisions) for r in records)
    assert sum(len(c) for c in agent.calls) == decisions
    assert len(agent.calls) == engine.steps
    assert 6 <= engine.steps <= 12
    # Every decision is one of the agent's moves in the hand it is recorded against.
    for rec in records:
        for rnd_index, rnd in enumerate(rec.rounds):
            mine = [d.action for d in rec.decisions if d.round == rnd_index]
            assert tuple(mine) == rnd.actions[AGENT]


def test_opponents_are_asked_in_one_call_per_player() -> None:
    opponent = RecordingPlayer({"ipd": IPD.strategies["Mixed"]}, [], name="Mixed")
    episodes = [Episode(IPD, IPD.strategies["TitForTat"], opponent, seed) for seed in range(6)]
    Engine(episodes).run()
    assert [len(c) for c in opponent.calls] == [6] * 8


def test_same_seed_same_opponent_randomness_whatever_the_agent_does() -> None:
    mixed = IPD.strategies["Mixed"]
    recs = play(IPD, IPD.strategies["AlwaysCooperate"], [mixed], [11, 11, 12])
    other_agent = play(IPD, IPD.strategies["AlwaysDefect"], [mixed], [11])[0]
    assert moves(recs[0], OPPONENT) == moves(recs[1], OPPONENT)
    # Mixed ignores the history, so even a different agent meets the same opponent moves.
    assert moves(other_agent, OPPONENT) == moves(recs[0], OPPONENT)
    assert moves(recs[2], OPPONENT) != moves(recs[0], OPPONENT)


def test_same_seed_same_chance() -> None:
    # Kuhn cards are chance: the same seed deals the same cards to any pair of players.
    a = play(KUHN, KUHN.strategies["AlwaysBet"], [KUHN.strategies["Nash"]], [5])[0]
    b = play(KUHN, KUHN.strategies["TightPassive"], [KUHN.strategies["AlwaysPass"]], [5])[0]
    c = play(KUHN, KUHN.strategies["AlwaysBet"], [KUHN.strategies["Nash"]], [6])[0]
    cards = [r.info["cards"] for r in a.rounds]
    assert cards == [r.info["cards"] for r in b.rounds]
    assert cards != [r.info["cards"] for r in c.rounds]


def test_runs_are_deterministic() -> None:
    opponents = [IPD.strategies[n] for n in ("Mixed", "GenerousTitForTat", "Joss")]

    def run() -> list[tuple]:
        recs = play(IPD, IPD.strategies["Random"], opponents, list(range(20)))
        return [(r.opponent, r.seed, [(x.actions, x.payoffs) for x in r.rounds]) for r in recs]

    first = run()
    assert first == run()
    # And the randomness is real: not every episode is the same.
    assert len({str(x[2]) for x in first}) > 10


def test_games_and_opponents_mix_in_one_engine() -> None:
    auction = get_game("auction")
    ref: list[Engine] = []
    agent = RecordingPlayer({"ipd": IPD.strategies["TitForTat"],
                             "kuhn": KUHN.strategies["Nash"],
                             "auction": auction.strategies["Truthful"]}, ref)
    plan = [(IPD, "Mixed"), (KUHN, "AlwaysBet"), (auction, "Aggressive"), (IPD, "GrimTrigger"),
            (KUHN, "Nash")]
    episodes = [Episode(g, agent, g.strategies[o], seed) for g, o in plan for seed in (1, 2)]
    engine = Engine(episodes)
    ref.append(engine)
    mixed = engine.run()
    # The first call holds every episode of every game.
    assert len(agent.calls[0]) == len(episodes)
    assert {r.game.name for r in agent.calls[0]} == {"ipd", "kuhn", "auction"}
    # Each episode ends exactly as it does when played alone.
    for rec, (g, o) in zip(mixed, [p for p in plan for _ in (1, 2)], strict=True):
        alone = play(g, agent.players[g.name].strategy, [g.strategies[o]], [rec.seed])[0]
        assert (rec.game, rec.opponent) == (g.name, o)
        assert [(x.actions, x.payoffs) for x in rec.rounds] == \
            [(x.actions, x.payoffs) for x in alone.rounds]


def test_episode_record_totals_and_means() -> None:
    rec = play(IPD, IPD.strategies["TitForTat"], [IPD.strategies["AlwaysDefect"]], [0])[0]
    # CD, then DD seven times.
    assert (rec.total(AGENT), rec.total(OPPONENT)) == (7.0, 12.0)
    assert (rec.mean(AGENT), rec.mean(OPPONENT)) == (7 / 8, 12 / 8)
    assert [d.round for d in rec.decisions] == list(range(8))
    assert (rec.game, rec.agent, rec.opponent) == ("ipd", "TitForTat", "AlwaysDefect")
    assert EpisodeRecord("ipd", "a", "b", 0, []).mean(AGENT) == 0.0


def test_a_player_answering_the_wrong_number_is_an_error() -> None:
    class Mute:
        name = "Mute"

        def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
            return []

    engine = Engine([Episode(IPD, Mute(), IPD.strategies["TitForTat"], 0)])
    with pytest.raises(RuntimeError, match="Mute answered 0 of 1"):
        engine.step()
