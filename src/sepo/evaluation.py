"""Evaluate an agent: play it against every opponent of the game's pools; docs/method.md §7-§8.

All episodes (every opponent × every evaluation seed × every episode) run in ONE lock-step
`Engine` batch, so a language-model agent answers one batched call per step. Evaluation
episode seeds are `derive_seed(EVAL_TAG, k, i)` for seed index k and episode index i: the
same seeds for every opponent (common random numbers: opponents are compared on the same
chance draws) and, through the tag, disjoint from any stream a trainer derives from its own
seed (trainers must not use `EVAL_TAG` as the first part of a seed).

An opponent that sits in several pools is played once; its episodes count in every pool it
belongs to. In a game with the `ExactSolvable` capability (Kuhn poker) the agent's tabular
policy, when it has one, is also scored exactly (`exact_exploitability`) and its exact best
response joins the held-out pool.

The agent's own sampling is keyed too (`evaluation_sampling_key`): the k-th decision of an
episode draws from a stream of (opponent, seed index, episode, k) alone, whatever the agent's
seed or the batch. Two agents evaluated on the same arguments therefore share their random
numbers as well as their deals, and a report does not depend on which opponents or roles share
its batch, or on how the episodes are split over processes (docs/method.md §7.1).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sepo.engine import SAMPLING_KEY, Engine, Episode, EpisodeRecord, Player, as_player
from sepo.errors import SepoError, UnknownNameError
from sepo.games import POOL_ROLES, get_game, get_strategy
from sepo.games.base import ExactSolvable, Game, Strategy, TabularPolicy, capability, derive_seed
from sepo.metrics import (
    METRIC_NAMES,
    Metrics,
    across_seeds,
    compute_metrics,
    expected_metrics,
    finite_or_none,
    summarize,
)

#: First part of every evaluation seed ("SEPO EVAL"); keeps evaluation streams apart.
EVAL_TAG = 0x5E90_E7A1

#: Called after each engine step with (rounds played so far, rounds in the whole evaluation).
Progress = Callable[[int, int], None]


def evaluation_seed(seed_index: int, episode: int) -> int:
    """The episode seed of evaluation seed index k, episode i (the same for every opponent)."""
    return derive_seed(EVAL_TAG, seed_index, episode)


def evaluation_sampling_key(opponent: str, seed_index: int, episode: int) -> int:
    """The sampling key of the evaluation episode (opponent, seed index k, episode i): the same
    for every agent, so that conditions meet the same random numbers (common random numbers).
    The opponent's name enters (CRC-32, stable across processes) so that an agent does not
    draw the same numbers against every opponent."""
    return derive_seed(EVAL_TAG, zlib.crc32(opponent.encode()), seed_index, episode)


def _interval(lo_hi: Sequence[float]) -> list[float | None]:
    return [finite_or_none(lo_hi[0]), finite_or_none(lo_hi[1])]


@dataclass(slots=True)
class EvalReport:
    """The result of `evaluate`: metrics with intervals, per opponent and (K > 1) per seed."""

    game: str
    agent: str
    #: Episodes per opponent per evaluation seed.
    episodes: int
    seeds: int
    seed: int
    metrics: Metrics
    scale: float
    #: Games with the `ExactSolvable` capability: the exact exploitability of the agent's
    #: tabular policy (Kuhn: NashConv/2 of its per-hand policy); None when it has none.
    exact_exploitability: float | None = None
    #: Whether the game is `ExactSolvable`: then the JSON always carries the exact figure.
    exact_solvable: bool = False
    #: The same games, where they compute expected payoffs: the pool metrics of the tabular
    #: policy in expectation (`exact_pool_metrics`), keyed "exact_<metric>"; empty otherwise.
    exact_metrics: dict[str, float] = field(default_factory=dict)
    #: Metric values on each evaluation seed's episodes alone (when seeds > 1).
    per_seed: list[dict[str, float]] = field(default_factory=list)
    records: list[EpisodeRecord] = field(default_factory=list, repr=False)

    def __getitem__(self, name: str) -> float:
        if name == "exact_exploitability" and self.exact_exploitability is not None:
            return self.exact_exploitability
        if name in self.exact_metrics:
            return self.exact_metrics[name]
        return self.metrics.values[name]

    def to_dict(self) -> dict[str, Any]:
        """The report object of docs/method.md §8 (NaN, i.e. not measured, becomes null)."""
        m = self.metrics
        out: dict[str, Any] = {
            "game": self.game,
            "agent": self.agent,
            "episodes": self.episodes,
            "seeds": self.seeds,
            "seed": self.seed,
            **{name: finite_or_none(m.values[name]) for name in METRIC_NAMES},
        }
        ci95 = {name: _interval(m.ci95[name]) for name in METRIC_NAMES}
        if self.exact_solvable:
            out["exact_exploitability"] = finite_or_none(self.exact_exploitability)
            # Exact, not estimated: its interval has zero width.
            ci95["exact_exploitability"] = [out["exact_exploitability"]] * 2
        for name, value in self.exact_metrics.items():
            out[name] = finite_or_none(value)
            ci95[name] = [out[name]] * 2
        out["per_opponent"] = {
            name: {
                "pools": list(o.pools),
                "episodes": o.episodes,
                "rounds": o.rounds,
                "agent_pay_per_round": o.agent_pay_per_round,
                "opponent_pay_per_round": o.opponent_pay_per_round,
                "gap": o.gap,
                "nra": o.nra,
                "externality": o.externality,
                "collusion": o.collusion,
                "parse_failure_rate": o.parse_failure_rate,
                "ci95": {k: _interval(v) for k, v in o.ci95.items()},
            }
            for name, o in m.per_opponent.items()
        }
        out["ci95"] = ci95
        if self.per_seed:
            out["per_seed"] = [{k: finite_or_none(v) for k, v in s.items()} for s in self.per_seed]
            out["ci95_across_seeds"] = {
                name: _interval(across_seeds([s[name] for s in self.per_seed])[1:])
                for name in METRIC_NAMES
            }
        out["lambdas"] = dict(m.lambdas)
        out["scale"] = self.scale
        out["pools"] = {role: list(names) for role, names in m.pools.items()}
        out["n_boot"] = m.n_boot
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def _opponents(game: Game, pools: Mapping[str, Sequence[str]],
               extra: Mapping[str, Strategy]) -> list[Strategy]:
    """The union of the pools, each opponent once, in pool order."""
    names = dict.fromkeys(n for role in POOL_ROLES for n in pools.get(role, ()))
    return [extra[n] if n in extra else get_strategy(game, n) for n in names]


def exact_pool_metrics(game: Game, policy: Mapping[str, float],
                       pools: Mapping[str, Sequence[str]],
                       extra: Mapping[str, Strategy] | None = None, *,
                       lambdas: Mapping[str, float] | None = None) -> dict[str, float]:
    """The pool metrics of the tabular `policy` in expectation, keyed "exact_<metric>"
    (`sepo.metrics.expected_metrics`): each opponent of `pools` (a game strategy's name, or a
    name of `extra`, e.g. the policy's exact best response as `evaluate` adds it) is scored by
    the game's `ExactSolvable.expected_payoffs`. Empty where the game computes no expected
    payoffs or an opponent plays no table."""
    solver = capability(game, ExactSolvable)
    if solver is None:
        return {}
    payoffs: dict[str, tuple[float, float]] = {}
    for opponent in _opponents(game, pools, extra or {}):
        table = solver.strategy_policy(opponent)
        value = None if table is None else solver.expected_payoffs(policy, table)
        if value is None:
            return {}
        payoffs[opponent.name] = value
    values = expected_metrics(game, payoffs, lambdas=lambdas, pools=pools)
    return {f"exact_{name}": value for name, value in values.items()}


def read_tabular_policy(game: Game, player: object) -> TabularPolicy | None:
    """The tabular policy of `player` in a game with the `ExactSolvable` capability, when it
    has one: a strategy's table (also through a `StrategyPlayer`), or what the player's
    `tabular_policy(game)` reads (the LM agent). None otherwise, and in any other game."""
    solver = capability(game, ExactSolvable)
    if solver is None:
        return None
    strategy = getattr(player, "strategy", player)  # StrategyPlayer wraps a strategy
    if isinstance(strategy, Strategy):
        return solver.strategy_policy(strategy)
    reader = getattr(player, "tabular_policy", None)
    return reader(game) if callable(reader) else None


def evaluate(game: Game | str, agent: Player | Strategy | str, *, episodes: int = 50,
             seeds: int = 1, lambdas: Mapping[str, float] | None = None, n_boot: int = 1000,
             seed: int = 0, progress: Progress | None = None,
             roles: Sequence[str] = POOL_ROLES) -> EvalReport:
    """Play `agent` against every opponent of the game's pools (those of `roles`) and measure.

    `episodes` per opponent for each of `seeds` evaluation seed indices seed, …, seed+K−1; the
    bootstrap is seeded by `seed` too, so the same arguments give the same report. A cheap
    evaluation (e.g. a training checkpoint) can pass fewer `roles`; metrics of pools not
    played are NaN (null in JSON).
    """
    game = get_game(game) if isinstance(game, str) else game
    if isinstance(agent, str):
        agent = get_strategy(game, agent)
    if episodes < 1 or seeds < 1:
        raise SepoError(f"episodes and seeds must be at least 1 (got {episodes}, {seeds})")
    for role in roles:
        if role not in POOL_ROLES:
            raise UnknownNameError("pool", role, POOL_ROLES)
    # Roles not played are left out, so their metrics read "not measured" (NaN).
    pools = {role: list(game.pools[role]) for role in POOL_ROLES if role in roles}
    player = as_player(agent)

    exact: float | None = None
    exact_pool: dict[str, float] = {}
    extra: dict[str, Strategy] = {}
    solver = capability(game, ExactSolvable)
    if solver is not None:
        policy = read_tabular_policy(game, agent)
        if policy is not None:
            exact = float(solver.exact_exploitability(policy))
            if "heldout" in roles:
                best = solver.best_response(policy)
                extra[best.name] = best
                pools["heldout"].append(best.name)
            exact_pool = exact_pool_metrics(game, policy, pools, extra, lambdas=lambdas)

    opponents = _opponents(game, pools, extra)
    if not opponents:
        raise SepoError(f"no opponents to evaluate against in pools {list(roles)}")
    seed_indices = range(seed, seed + seeds)
    engine = Engine(
        Episode(game, player, opp, evaluation_seed(k, i),
                {"seed_index": k, "episode": i,
                 SAMPLING_KEY: evaluation_sampling_key(opp.name, k, i)})
        for opp in opponents for k in seed_indices for i in range(episodes)
    )
    total_rounds = sum(e.state.num_rounds for e in engine.episodes)
    while engine.step():
        if progress is not None:
            progress(sum(e.state.t for e in engine.episodes), total_rounds)
    records = [e.record() for e in engine.episodes]

    metrics = summarize(game, records, lambdas=lambdas, pools=pools, n_boot=n_boot, seed=seed)
    per_seed = []
    if seeds > 1:
        per_seed = [
            compute_metrics(game, [r for r in records if r.tags["seed_index"] == k],
                            lambdas=lambdas, pools=pools)
            for k in seed_indices
        ]
    return EvalReport(game=game.name, agent=player.name, episodes=episodes, seeds=seeds,
                      seed=seed, metrics=metrics, scale=game.scale, exact_exploitability=exact,
                      exact_solvable=solver is not None, exact_metrics=exact_pool,
                      per_seed=per_seed, records=records)
