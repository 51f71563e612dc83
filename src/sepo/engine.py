"""The lock-step episode engine: many episodes at once, one batched agent decision per step.

Each `Engine.step()` advances every live episode to its next agent decision and asks all of
those decisions in one call per player (`Player.decide`). That is the call a language-model
agent turns into one batched `generate`. In simultaneous games a step is one round; in Kuhn
poker a hand takes one or two steps (the agent may act twice in a hand). Opponent decisions
are asked the same way (grouped by player), so an opponent can be a model too.

Players are anything with `name` and `decide(requests) -> decisions`: a `StrategyPlayer`, an LM
agent, a person at the terminal. Episodes with the same seed see the same chance and the same
opponent randomness (common random numbers), so a group of rollouts that share a seed differ
only by the agent's own choices.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sepo.games.base import (
    AGENT,
    CHANCE_STREAM,
    Action,
    Game,
    GameState,
    Round,
    Strategy,
    derive_seed,
    seat_stream,
)

#: The episode tag that gives its agent's sampling a key of its own (an int): an LM agent then
#: draws the tokens of the episode's k-th agent decision from a stream seeded by (key, k), so
#: that what an episode plays does not depend on which episodes share its batch, its engine step
#: or its process (`sepo.agents.lm.LMAgent.decide`). The trainer keys every rollout and
#: evaluation every episode (`sepo.evaluation.evaluation_sampling_key`); episodes without a
#: key (`sepo play`, a caller's own engine) draw from the agent's per-call stream.
SAMPLING_KEY = "sampling_key"


@dataclass(slots=True)
class DecisionRequest:
    """One decision a player must make: the game, the episode's state, and the seat."""

    episode: Episode
    seat: int

    @property
    def game(self) -> Game:
        return self.episode.game

    @property
    def state(self) -> GameState:
        return self.episode.state

    @property
    def rng(self) -> random.Random:
        """The seat's own random stream in this episode."""
        return self.episode.rngs[self.seat]


@dataclass(slots=True)
class Decision:
    """What a player decided. LM players also return the text and their training trace."""

    action: Action
    text: str | None = None
    #: True when the text named no legal action and the constrained fallback chose it.
    parse_failed: bool = False
    #: Whatever the player needs to learn from this decision (token ids, log-probabilities).
    trace: Any = None


@runtime_checkable
class Player(Protocol):
    name: str

    def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        """One decision per request, in order; called once per engine step with all of them."""
        ...


class StrategyPlayer:
    """A rule-based strategy as a player; it draws from each episode's own seat stream."""

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self.name = strategy.name

    def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        choose = self.strategy.choose
        return [
            Decision(choose(r.episode.game, r.episode.state, r.seat, r.episode.rngs[r.seat]))
            for r in requests
        ]

    def __repr__(self) -> str:
        return f"StrategyPlayer({self.name})"


def as_player(player: Player | Strategy) -> Player:
    return StrategyPlayer(player) if isinstance(player, Strategy) else player


@dataclass(slots=True)
class AgentDecision:
    """An agent decision as recorded: the round it belongs to, the action, text and trace."""

    round: int
    action: Action
    text: str | None
    parse_failed: bool
    trace: Any = None


@dataclass(slots=True)
class EpisodeRecord:
    """A finished episode: everything metrics and rewards need, and nothing of the engine."""

    game: str
    agent: str
    opponent: str
    seed: int
    rounds: list[Round]
    #: The agent's (seat 0) decisions in order; a Kuhn round may hold two.
    decisions: list[AgentDecision] = field(default_factory=list)
    #: Free labels, e.g. {"pool": "exploit", "group": 3}.
    tags: dict[str, Any] = field(default_factory=dict)

    def total(self, seat: int) -> float:
        return float(sum(r.payoffs[seat] for r in self.rounds))

    def mean(self, seat: int) -> float:
        return self.total(seat) / len(self.rounds) if self.rounds else 0.0


class Episode:
    """One live episode: a game state, the two players, and the seed's random streams."""

    __slots__ = ("decisions", "game", "players", "rngs", "seed", "state", "tags")

    def __init__(self, game: Game, agent: Player | Strategy, opponent: Player | Strategy,
                 seed: int, tags: dict[str, Any] | None = None) -> None:
        self.game = game
        self.players = (as_player(agent), as_player(opponent))
        self.seed = int(seed)
        self.state = game.new_state(derive_seed(self.seed, CHANCE_STREAM))
        self.rngs = tuple(random.Random(derive_seed(self.seed, seat_stream(s))) for s in (0, 1))
        self.decisions: list[AgentDecision] = []
        self.tags = dict(tags or {})

    @property
    def done(self) -> bool:
        return self.state.done

    def record(self) -> EpisodeRecord:
        return EpisodeRecord(
            game=self.game.name, agent=self.players[0].name, opponent=self.players[1].name,
            seed=self.seed, rounds=list(self.state.rounds), decisions=self.decisions,
            tags=self.tags,
        )


class Engine:
    """Plays a list of episodes (any games, players and seeds) in lock-step."""

    def __init__(self, episodes: Iterable[Episode]) -> None:
        self.episodes = list(episodes)
        self.steps = 0

    @property
    def live(self) -> list[Episode]:
        return [e for e in self.episodes if not e.state.done]

    def _ask(self, requests: list[DecisionRequest]) -> None:
        """Ask each player its share of `requests` in one call, then apply the answers."""
        by_player: dict[int, tuple[Player, list[DecisionRequest]]] = {}
        for r in requests:
            p = r.episode.players[r.seat]
            by_player.setdefault(id(p), (p, []))[1].append(r)
        for player, reqs in by_player.values():
            answers = player.decide(reqs)
            if len(answers) != len(reqs):
                raise RuntimeError(f"{player.name} answered {len(answers)} of {len(reqs)}")
            for r, d in zip(reqs, answers, strict=True):
                ep = r.episode
                if r.seat == AGENT:
                    ep.decisions.append(
                        AgentDecision(ep.state.t, d.action, d.text, d.parse_failed, d.trace))
                ep.game.apply(ep.state, r.seat, d.action)

    def step(self) -> int:
        """Advance every live episode by one agent decision; returns how many were made."""
        # 1. Opponents move until each live episode waits on the agent (or is over).
        while True:
            waiting = [DecisionRequest(e, s) for e in self.episodes
                       for s in e.game.to_act(e.state) if s != AGENT]
            if not waiting:
                break
            self._ask(waiting)
        # 2. One batched call for all agent decisions.
        agent_requests = [DecisionRequest(e, AGENT) for e in self.episodes
                          if AGENT in e.game.to_act(e.state)]
        if agent_requests:
            self._ask(agent_requests)
            self.steps += 1
        return len(agent_requests)

    def run(self) -> list[EpisodeRecord]:
        """Play every episode to the end; records in the order the episodes were given."""
        while self.step():
            pass
        return [e.record() for e in self.episodes]


def play(game: Game, agent: Player | Strategy, opponents: Sequence[Player | Strategy],
         seeds: Sequence[int], tags: dict[str, Any] | None = None) -> list[EpisodeRecord]:
    """Every opponent against the agent on every seed, in one lock-step batch."""
    agent = as_player(agent)
    players = [as_player(o) for o in opponents]
    episodes = [Episode(game, agent, o, s, tags) for o in players for s in seeds]
    return Engine(episodes).run()
