"""Best-response oracles: the adaptive exploiters SEPO trains against (docs/method.md §5.7).

One interface, `BestResponseOracle`: `refresh(agent, step, seed)` plays or solves against the
current policy and returns a `Refresh` (every candidate ranked, the chosen ones first);
`exploiters(refresh)` gives the chosen strategies, also after a resume (the refresh is plain
JSON in the checkpoint's trainer state). Which oracle a game gets follows what it declares,
never its name (`build_oracle`):

- `ExactOracle`, for a game with the `ExactSolvable` capability (Kuhn): the exact best response
  to the agent's tabular policy. In a zero-sum game its exploit reward is the signed payoff
  gap (`signed_gap`): against it a better payoff is exactly lower exploitability.
- `PopulationOracle`, for a game with a library of candidate exploiters
  (`sepo.games.candidate_exploiters`): every candidate outside the fixed exploit pool plays
  the current policy for `episodes` episodes in one lock-step batch, all on the same seeds
  (common random numbers), and the candidates are ranked by the exploitation gap
  e = max(0, ū_o − ū_π), ties by ū_o − ū_π, then by library order; the top m are chosen.

The trainer (`sepo.train.sepo`) derives the seeds, calls `refresh` every K steps and plays the
chosen exploiters in m exploit groups after the fixed ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sepo.engine import SAMPLING_KEY, Engine, Episode, Player
from sepo.errors import SepoError
from sepo.evaluation import read_tabular_policy
from sepo.games import ExactSolvable, Game, Strategy, candidate_exploiters, capability
from sepo.games.base import AGENT, OPPONENT, derive_seed

#: The run directory's log of every refresh, one JSON object per line.
ORACLE_LOG = "oracle.jsonl"


@dataclass(frozen=True, slots=True)
class Collective:
    """How the processes of a data-parallel run share a refresh: each plays its share of the
    candidates (`rank::world`) and `all_gather` gives every process everyone's results, in
    rank order, so every process ranks the same numbers and chooses the same exploiters."""

    rank: int = 0
    world: int = 1
    all_gather: Callable[[Any], list[Any]] = field(default=lambda x: [x])


SINGLE_PROCESS = Collective()


@dataclass(frozen=True, slots=True)
class Ranked:
    """One candidate's result at a refresh: its gap e = max(0, ū_o − ū_π), the unclipped
    difference, the mean payoffs per round (agent, candidate) over its `episodes`."""

    name: str
    gap: float
    diff: float
    agent_pay: float
    opponent_pay: float
    episodes: int


@dataclass(slots=True)
class Refresh:
    """What one refresh chose, as stored in the trainer state and logged in `oracle.jsonl`.

    `chosen` are the m exploiters in slot order; `ranking` every candidate, best first;
    `policy` the agent's tabular policy an exact best response answers (None otherwise)."""

    step: int
    kind: str
    chosen: list[str]
    ranking: list[Ranked]
    policy: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Refresh:
        try:
            return cls(step=int(data["step"]), kind=str(data["kind"]),
                       chosen=[str(n) for n in data["chosen"]],
                       ranking=[Ranked(**r) for r in data["ranking"]],
                       policy=(None if data.get("policy") is None
                               else {str(k): float(v) for k, v in data["policy"].items()}))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise SepoError(f"the checkpoint's oracle state is not a refresh ({err})") from None

    @property
    def top_gap(self) -> float:
        return self.ranking[0].gap if self.ranking else math.nan

    @property
    def chosen_gap(self) -> float:
        """Mean gap of the distinct chosen exploiters."""
        gaps = {r.name: r.gap for r in self.ranking}
        chosen = [gaps[n] for n in dict.fromkeys(self.chosen) if n in gaps]
        return sum(chosen) / len(chosen) if chosen else math.nan


class BestResponseOracle(Protocol):
    """What the trainer asks of an oracle (see the module docstring)."""

    kind: str
    #: Whether the exploit reward against its exploiters is the signed payoff gap
    #: −λe·s·(ū_o − ū_π) of the episode (else the metric's max(0, ·)).
    signed_gap: bool

    def refresh(self, agent: Player, step: int, seed: int,
                collective: Collective = SINGLE_PROCESS) -> Refresh: ...

    def exploiters(self, refresh: Refresh) -> list[Strategy]: ...


class ExactOracle:
    """The exact best response to the agent's tabular policy (`ExactSolvable`)."""

    kind = "exact"

    def __init__(self, game: Game, solver: ExactSolvable) -> None:
        self.game = game
        self.solver = solver
        # The best responder's gain is the agent's exploitability; in a zero-sum game a better
        # payoff against it is exactly lower exploitability, so its reward is not clipped.
        self.signed_gap = bool(game.zero_sum)

    def refresh(self, agent: Player, step: int, seed: int,
                collective: Collective = SINGLE_PROCESS) -> Refresh:
        policy = read_tabular_policy(self.game, agent)
        if policy is None:
            raise SepoError(f"the {self.game.name} oracle needs the agent's tabular policy, and "
                            f"{getattr(agent, 'name', agent)!r} has none")
        # Rank 0's reading for every process: a best response flips on near-ties, which
        # float rounding could break differently on another device.
        policy = dict(collective.all_gather(dict(policy))[0])
        name = self.solver.best_response(policy).name
        value = self.solver.exact_exploitability(policy)
        # Zero-sum: the responder's payoff per round minus the agent's is twice its gain.
        diff = 2.0 * value if self.game.zero_sum else value
        ranked = Ranked(name, max(0.0, diff), diff, -diff / 2, diff / 2, 0)
        return Refresh(step, self.kind, [name], [ranked], policy)

    def exploiters(self, refresh: Refresh) -> list[Strategy]:
        if refresh.policy is None:
            raise SepoError("the checkpoint's oracle state lacks the policy of its best response")
        return [self.solver.best_response(refresh.policy)]


class PopulationOracle:
    """The top `top` of a library of candidate exploiters, by gap against the current policy."""

    kind = "population"
    signed_gap = False

    def __init__(self, game: Game, library: Mapping[str, Strategy], top: int,
                 episodes: int) -> None:
        if not library:
            raise SepoError(f"{game.name}: the oracle's library of candidates is empty")
        self.game = game
        self.library = dict(library)
        self.top = top
        self.episodes = episodes

    def refresh(self, agent: Player, step: int, seed: int,
                collective: Collective = SINGLE_PROCESS) -> Refresh:
        names = list(self.library)
        seeds = [derive_seed(seed, e) for e in range(self.episodes)]
        mine = range(collective.rank, len(names), collective.world)
        # Each episode's own sampling key: a candidate's episodes play the same whichever
        # process plays them and whichever others share their batch.
        batch = [Episode(self.game, agent, self.library[names[j]], s,
                         {"candidate": j, SAMPLING_KEY: derive_seed(seed, e, j + 1)})
                 for j in mine for e, s in enumerate(seeds)]
        sums: dict[int, list[float]] = {j: [0.0, 0.0, 0.0, 0.0] for j in mine}
        for record in Engine(batch).run():
            total = sums[record.tags["candidate"]]
            total[0] += record.total(AGENT)
            total[1] += record.total(OPPONENT)
            total[2] += len(record.rounds)
            total[3] += 1
        merged: dict[int, list[float]] = {}
        for part in collective.all_gather(sums):
            merged.update(part)
        ranking = []
        for j, name in enumerate(names):
            agent_total, opp_total, rounds, count = merged[j]
            agent_pay, opp_pay = agent_total / max(rounds, 1), opp_total / max(rounds, 1)
            diff = opp_pay - agent_pay
            ranking.append(Ranked(name, max(0.0, diff), diff, agent_pay, opp_pay, int(count)))
        # Stable sort: equal differences keep the library's order.
        ranking.sort(key=lambda r: -r.diff)
        return Refresh(step, self.kind, [r.name for r in ranking[:self.top]], ranking)

    def exploiters(self, refresh: Refresh) -> list[Strategy]:
        missing = [n for n in refresh.chosen if n not in self.library]
        if missing:
            raise SepoError(f"the oracle chose {missing}, which {self.game.name}'s library of "
                            "candidate exploiters lacks here (is an optional package, such as "
                            "axelrod, missing?)")
        return [self.library[n] for n in refresh.chosen]


def build_oracle(game: Game, *, top: int, episodes: int) -> BestResponseOracle | None:
    """The game's oracle: exact where it is `ExactSolvable`, else a population oracle over its
    candidate exploiters outside the fixed exploit pool; None for a game with neither."""
    solver = capability(game, ExactSolvable)
    if solver is not None:
        return ExactOracle(game, solver)
    fixed = set(game.pools["exploit"])
    library = {n: s for n, s in candidate_exploiters(game).items() if n not in fixed}
    return PopulationOracle(game, library, top, episodes) if library else None


def slot_opponents(exploiters: Sequence[Strategy], slots: Sequence[str]) -> dict[str, Strategy]:
    """The opponent of each oracle group (slot names, in order): the chosen exploiters in
    turn, repeated when there are fewer than slots (an exact best response fills them all)."""
    return {slot: exploiters[i % len(exploiters)] for i, slot in enumerate(slots)}


class OracleLog:
    """`oracle.jsonl`: one line per refresh (written by the main process). A resumed run keeps
    the lines up to its checkpoint's step and writes the later refreshes again."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def keep_until(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and _line_step(line) <= step]
        self.path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")

    def append(self, refresh: Refresh, seconds: float) -> None:
        entry = {**refresh.to_json(), "seconds": round(seconds, 4)}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, allow_nan=False) + "\n")


def _line_step(line: str) -> float:
    """The step of a logged line; +inf for a torn one, so that it is dropped."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf
