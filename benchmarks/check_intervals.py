"""Calibration of the evaluation's 95% intervals (not a speed benchmark).

Each game's SFT demonstrator mixture is evaluated on `--sets` disjoint episode sets (seed
indices 1000 + 7919·k, `--episodes` per opponent each). The standard deviation of the
resulting estimates is what an honest interval must match: the script prints, per metric,
the mean interval half-width / 1.96 divided by that spread (1.0 is exact), and how often an
interval holds the grand mean over all sets (0.95 is exact). docs/DESIGN.md records a run.

    python benchmarks/check_intervals.py                    # 400 sets, all five games
    python benchmarks/check_intervals.py --games bargaining --sets 120
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sepo.evaluation import evaluate
from sepo.games import game_names, get_game
from sepo.sft.data import DemonstratorMixture

METRICS = ("pay_per_round", "exploit", "safety")


def calibration(game_name: str, sets: int, episodes: int) -> dict[str, tuple[float, float]]:
    """Per metric: (half-width/1.96 over the estimates' spread, coverage of the grand mean)."""
    game = get_game(game_name)
    values: dict[str, list[float]] = {m: [] for m in METRICS}
    bounds: dict[str, list[tuple[float, float]]] = {m: [] for m in METRICS}
    for k in range(sets):
        metrics = evaluate(game, DemonstratorMixture(game), episodes=episodes,
                           seed=1000 + 7919 * k).metrics
        for m in METRICS:
            values[m].append(metrics.values[m])
            bounds[m].append(metrics.ci95[m])
    out = {}
    for m in METRICS:
        v, (lo, hi) = np.array(values[m]), np.array(bounds[m]).T
        ratio = float(np.mean(hi - lo) / 2 / 1.96 / np.std(v, ddof=1))
        out[m] = (ratio, float(np.mean((lo <= v.mean()) & (v.mean() <= hi))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=list(game_names()))
    parser.add_argument("--sets", type=int, default=400)
    parser.add_argument("--episodes", type=int, default=30)
    args = parser.parse_args()
    print("| game | metric | half-width/1.96 ÷ spread | coverage |\n|---|---|---:|---:|")
    for name in args.games:
        start = time.perf_counter()
        for m, (ratio, coverage) in calibration(name, args.sets, args.episodes).items():
            print(f"| {name} | {m} | {ratio:.2f} | {coverage:.2f} |")
        print(f"<!-- {name}: {time.perf_counter() - start:.1f} s -->")


if __name__ == "__main__":
    main()
