"""The cost of batch-independent sampling: one decoding step's draw with one generator for the
batch (evaluation, play) against one generator per row (training rollouts, whose episodes
carry a `sepo.engine.SAMPLING_KEY`), for a vocabulary the size of `tiny`'s and of SmolLM2's.

    python benchmarks/bench_row_streams.py              # a markdown table
    python benchmarks/bench_row_streams.py --repeat 50

One thread; timings are the best of `--repeat` draws (the least disturbed by other processes).
"""

from __future__ import annotations

import argparse
import time

import torch

from sepo.agents.decoding import RowGenerators, draw_tokens, row_generators


def best_ms(logits: torch.Tensor, generator: RowGenerators, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        draw_tokens(logits, 1.0, 1.0, generator)
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| vocabulary | rows | one generator (ms) | one per row (ms) |")
    print("|---:|---:|---:|---:|")
    for vocabulary in (2048, 49152):
        for rows in (16, 64, 256):
            logits = torch.randn(rows, vocabulary, generator=torch.Generator().manual_seed(0))
            one = torch.Generator().manual_seed(0)
            per_row = row_generators(range(rows), torch.device("cpu"))
            print(f"| {vocabulary} | {rows} | {best_ms(logits, one, args.repeat):.2f} | "
                  f"{best_ms(logits, per_row, args.repeat):.2f} |")


if __name__ == "__main__":
    main()
