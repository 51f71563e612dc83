"""Engine and metrics throughput: rule-based play through the lock-step engine, per game.

For each game a typical agent strategy (its heaviest SFT demonstrator) plays every opponent of
the train pool on many seeds, all in one `Engine` batch, in one process on one thread: this is
the non-LM cost of a rollout batch, which must be negligible beside the model's. Then the
metrics' bootstrap (1000 resamples, seeds drawn once for all opponents) is timed on
evaluation-sized record sets.

    python benchmarks/bench_engine.py                 # a markdown table
    python benchmarks/bench_engine.py --json          # one JSON object
    python benchmarks/bench_engine.py --episodes 500 --games ipd kuhn

Timings are the best of `--repeat` runs (the least disturbed by other processes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np

from sepo.engine import Engine, Episode, EpisodeRecord
from sepo.games import POOL_ROLES, game_names, get_game
from sepo.games.base import Game
from sepo.machine import cpu_name
from sepo.metrics import summarize


def machine() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def typical_agent(game: Game) -> str:
    return max(game.demonstrators, key=game.demonstrators.__getitem__)


def bench_game(game: Game, episodes: int, repeat: int) -> dict[str, Any]:
    agent = game.strategies[typical_agent(game)]
    opponents = [game.strategies[n] for n in game.pools["train"]]
    wall = cpu = float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        engine = Engine(Episode(game, agent, o, seed) for o in opponents
                        for seed in range(episodes))
        records = engine.run()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    rounds = sum(len(r.rounds) for r in records)
    decisions = sum(len(r.decisions) for r in records)
    return {
        "game": game.name,
        "agent": agent.name,
        "opponents": len(opponents),
        "episodes": len(records),
        "rounds": rounds,
        "agent_decisions": decisions,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        # Per CPU-second of this process: the one-core figure, robust to other load.
        "episodes_per_s": len(records) / cpu,
        "rounds_per_s": rounds / cpu,
        "decisions_per_s": decisions / cpu,
        "rounds_per_wall_s": rounds / wall,
    }


def evaluation_records(game: Game, episodes: int) -> list[EpisodeRecord]:
    """What `evaluate` produces: the agent against the union of the pools."""
    agent = game.strategies[typical_agent(game)]
    names = dict.fromkeys(n for role in POOL_ROLES for n in game.pools[role])
    return Engine(Episode(game, agent, game.strategies[n], seed) for n in names
                  for seed in range(episodes)).run()


def bench_bootstrap(games: list[Game], episodes: int, n_boot: int,
                    repeat: int) -> dict[str, Any]:
    sets = {g.name: evaluation_records(g, episodes) for g in games}
    per_game = {}
    for game in games:
        wall = cpu = float("inf")
        for _ in range(repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            summarize(game, sets[game.name], n_boot=n_boot)
            wall = min(wall, time.perf_counter() - start)
            cpu = min(cpu, time.process_time() - start_cpu)
        per_game[game.name] = {"records": len(sets[game.name]), "cpu_seconds": cpu,
                               "wall_seconds": wall}
    return {
        "episodes_per_opponent": episodes,
        "n_boot": n_boot,
        "per_game": per_game,
        "all_games_cpu_seconds": sum(v["cpu_seconds"] for v in per_game.values()),
        "all_games_wall_seconds": sum(v["wall_seconds"] for v in per_game.values()),
        "all_games_records": sum(v["records"] for v in per_game.values()),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--games", nargs="*", default=None, help="default: every game")
    parser.add_argument("--episodes", type=int, default=2000,
                        help="episodes per opponent in the engine benchmark")
    parser.add_argument("--boot-episodes", type=int, nargs="*", default=[50, 1000],
                        help="episodes per opponent in the bootstrap benchmarks")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    games = [get_game(n) for n in (args.games or game_names())]
    result = {
        "command": "python benchmarks/bench_engine.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "engine": [bench_game(g, args.episodes, args.repeat) for g in games],
        "bootstrap": [bench_bootstrap(games, e, args.n_boot, args.repeat)
                      for e in args.boot_episodes],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return result

    m = result["machine"]
    print(f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
          f"Python {m['python']}, NumPy {m['numpy']}, {m['platform']}")
    print(f"Engine: one process, one thread, best of {args.repeat}; typical agent vs the train "
          f"pool, {args.episodes} seeds per opponent; rates per CPU-second (wall in brackets)\n")
    print("| game | agent | episodes | rounds | CPU s | episodes/s | rounds/s | decisions/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in result["engine"]:
        print(f"| {r['game']} | {r['agent']} | {r['episodes']} | {r['rounds']} | "
              f"{r['cpu_seconds']:.2f} | {r['episodes_per_s']:,.0f} | {r['rounds_per_s']:,.0f} "
              f"({r['rounds_per_wall_s']:,.0f}) | {r['decisions_per_s']:,.0f} |")
    for b in result["bootstrap"]:
        print(f"\nBootstrap ({b['n_boot']} resamples, seeds drawn together) with `summarize` on "
              f"evaluation records, {b['episodes_per_opponent']} episodes per opponent:\n")
        print("| game | records | CPU s | wall s |")
        print("|---|---:|---:|---:|")
        for name, v in b["per_game"].items():
            print(f"| {name} | {v['records']} | {v['cpu_seconds']:.3f} | "
                  f"{v['wall_seconds']:.3f} |")
        print(f"| all | {b['all_games_records']} | {b['all_games_cpu_seconds']:.3f} | "
              f"{b['all_games_wall_seconds']:.3f} |")
    return result


if __name__ == "__main__":
    main()
