"""SEPO step cost on the `tiny` model: seconds per step, where the time goes, and FLOP/s.

For each game, runs `--steps` SEPO steps (after `--warmup` untimed ones) with the trainer's own
pieces, in the trainer's order — rollouts (one lock-step batch, one batched `generate` per
round), rewards + advantages + the decision batch (penalties and metrics), then the gradient
step (`optimise`: reference forward, policy forward/backward, clipped AdamW) — and times each
phase. The paper's per-game defaults apply (n = 4, every pool), full fine-tuning, fp32, and
the default oracle (docs/method.md §5.7): its m exploit groups are in every step's batch.

The oracle's refresh (the trainer's `StepOracle`) is timed apart, once before each timed step
whatever K: the population oracle plays every candidate against the current policy, Kuhn's
exact oracle reads the policy and solves (and, as in training, Kuhn's step then credits the
oracle's group exactly: its expected form adds one forward and backward pass over the 24
tabular-policy prompts to the update). The trainer refreshes every K steps
(`oracle_every`), so its share of a step at the defaults is (refresh / K) / (step + refresh /
K); the table also gives refresh / step, the share were it run every step. `--no-oracle`
times the fixed pools alone.

FLOP/s. First the machine's dense-matmul rate: the best of `--repeat` fp32 `torch.mm` of two
N×N matrices (2N³ FLOPs) on the same torch threads. Then the model FLOPs of the gradient step,
counted from the batch actually processed (PaLM's MFU convention). A micro-batch b of B_b
decisions whose prompts share a prefix of P_b tokens (the system prompt, run once when
`share_prompt_prefix` is on; P_b = 0 otherwise) and whose remaining parts are padded to R_b:

    forward  = 2·N_layers·(P_b + T_b) + 2·V·H·K_b + 2·L·H·(P_b² + B_b·(2·P_b·R_b + R_b²))
    backward = 2 × forward

with N_layers the transformer blocks' matmul parameters, T_b the micro-batch's non-padding
tokens after the prefix, K_b the LM-head positions kept (`logits_to_keep`), L layers, H the
hidden size. Attention (QKᵀ and AV, 4·H FLOPs per query-key pair and layer) is counted over
the causal lower triangle only, the work the fused causal kernel does: a prefix query sees the
prefix before it, a later query the whole prefix and the part of its own row before it. The
step runs one reference forward and `updates_per_step` forward + backward passes. The share
reported is achieved FLOP/s of the gradient step ÷ measured matmul FLOP/s; it counts work
done only (padding tokens are not counted in T, and a shared prefix counts once).

Where the loss packs the rows after the prefix (`packing_supported` of
`sepo.agents.fast.prefix_sharing`: tiny on CPU), each row i's r_i tokens are counted as they
are, with no padding anywhere: the attention term is 2·L·H·(P_b² + Σ_i (2·P_b·r_i + r_i²))
and K_b is the number of completion tokens, the only positions that reach the LM head.
"tokens (padded)" is then the tokens the matmuls ran, which equals the useful count.

    python benchmarks/bench_train_step.py                    # markdown tables
    python benchmarks/bench_train_step.py --json
    python benchmarks/bench_train_step.py --games kuhn --steps 3 --model /path/to/ckpt
    python benchmarks/bench_train_step.py --no-share-prompt-prefix   # every prompt in full
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any

import torch

from sepo.machine import cpu_name


def machine() -> dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1min": load, "python": platform.python_version(),
            "torch": torch.__version__}


def matmul_flops(n: int, repeat: int) -> dict[str, float]:
    """Best-of-`repeat` fp32 dense matmul rate (FLOP/s) on this machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up (thread pool, caches)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "seconds": best, "flops_per_s": 2.0 * n**3 / best}


def model_shape(model: Any) -> dict[str, int]:
    cfg = model.config
    layers = sum(p.numel() for n, p in model.named_parameters()
                 if ".layers." in n and p.dim() == 2)
    return {"layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
            "vocab": cfg.vocab_size, "layer_matmul_params": layers,
            "parameters": sum(p.numel() for p in model.parameters())}


def update_flops(model: Any, samples: list[Any], shape: dict[str, int], micro_batch_size: int,
                 updates: int, share_prefix: bool) -> dict[str, float]:
    """Model FLOPs of one `optimise` call on `samples` (see the module docstring)."""
    from sepo.agents.fast.prefix_sharing import (
        packed_prefix_tokens,
        packing_supported,
        shared_prefix_tokens,
    )
    from sepo.train.sepo import _micro_batches

    forward = 0.0
    tokens = padded = kept = 0
    packed = share_prefix and packing_supported(model)
    for idx in _micro_batches(samples, micro_batch_size):
        batch = [samples[i] for i in idx]
        sequences = [s.prompt_ids + s.completion_ids for s in batch]
        if packed:
            p = packed_prefix_tokens(sequences, [len(s.prompt_ids) for s in batch])
        elif share_prefix:
            p = shared_prefix_tokens(model, torch.nn.utils.rnn.pad_sequence(
                [torch.tensor(seq) for seq in sequences], batch_first=True))
        else:
            p = 0
        lengths = [len(seq) - p for seq in sequences]
        t = p + sum(lengths)
        if packed:  # no padding through the matmuls; the LM head on completion positions only
            k = sum(len(s.completion_ids) for s in batch)
            attention = p * p + sum(2 * p * r + r * r for r in lengths)
            ran = t
        else:
            width = max(lengths)
            # LM-head positions: the `logits_to_keep` window, whether the prefix is shared.
            k = (p + width - min(len(s.prompt_ids) for s in batch)) * len(batch)
            attention = p * p + len(batch) * (2 * p * width + width * width)
            ran = p + width * len(batch)
        forward += (2 * shape["layer_matmul_params"] * t + 2 * shape["vocab"] * shape["hidden"] * k
                    + 2 * shape["layers"] * shape["hidden"] * attention)
        tokens, padded, kept = tokens + t, padded + ran, kept + k
    return {"flops": forward * (1 + 3 * updates), "tokens": tokens, "padded_tokens": padded,
            "lm_head_positions": kept}


def bench_game(game_name: str, model_name: str, steps: int, warmup: int,
               micro_batch_size: int, share_prefix: bool = True,
               oracle_on: bool = True) -> dict[str, Any]:
    from accelerate import Accelerator

    from sepo.agents import LMAgent, SamplingConfig
    from sepo.engine import Engine
    from sepo.games import get_game
    from sepo.models import load_model
    from sepo.train.config import SEPOConfig
    from sepo.train.sepo import (
        build_policy,
        compute_advantages,
        compute_rewards,
        decision_samples,
        exact_advantages,
        exact_credit_inputs,
        expected_credit,
        optimise,
        rollout_episodes,
        rollout_groups,
        step_oracle,
    )

    game = get_game(game_name)
    with tempfile.TemporaryDirectory() as out:
        config = SEPOConfig(game=game_name, model=model_name, out=out, device="cpu",
                            micro_batch_size=micro_batch_size, lora=False,
                            share_prompt_prefix=share_prefix, oracle=oracle_on)
    model, tokenizer = load_model(model_name, device="cpu", dtype="float32", progress=False)
    shape = model_shape(model)
    policy = build_policy(model, tokenizer, config)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=config.lr)
    accelerator = Accelerator(cpu=True)
    optimizer = accelerator.prepare_optimizer(optimizer)
    agent = LMAgent(policy.model, tokenizer, SamplingConfig(
        temperature=config.temperature, reasoning=config.reasoning, seed=1))
    oracle = step_oracle(config, game, policy.model, tokenizer)
    groups = rollout_groups(game, config.credit,
                            oracle_groups=len(oracle.slots) if oracle else 0,
                            oracle_signed=oracle.oracle.signed_gap if oracle else False)

    rows = []
    for step in range(1, warmup + steps + 1):
        refresh = 0.0
        if oracle is not None:  # timed at every step, whatever K (see the module docstring)
            t_oracle = time.perf_counter()
            with torch.no_grad():
                oracle.refresh(step)
            refresh = time.perf_counter() - t_oracle
        t0 = time.perf_counter()
        opponents = oracle.opponents() if oracle else {}
        with torch.no_grad():
            # Kuhn's default exact credit (docs/method.md §5.7.1-5.7.2), as the trainer does.
            policy_table, tables = (exact_credit_inputs(
                game, agent, groups, opponents,
                read=oracle.policy_read_at(step) if oracle else None)
                if config.exact_credit else ({}, {}))
            records = Engine(rollout_episodes(game, agent, groups, config, step,
                                              opponents or None)).run()
        t1 = time.perf_counter()
        rewards = compute_rewards(game, records, config)
        weight = config.train_lambdas.exploit * game.scale
        exact = (exact_advantages(game, records, tables, policy_table, weight)
                 if tables else {})
        advantages = compute_advantages(rewards.per_round, rewards.groups, config.normalize,
                                        config.advantage, exact=exact)
        expected = (expected_credit(game, records, tables, policy_table, exact, advantages,
                                    weight) if config.exact_expected and exact else None)
        loss_groups = [None if expected is not None and k in exact else g
                       for k, g in enumerate(rewards.groups)]
        samples = decision_samples(records, advantages, loss_groups, exact.keys())
        t2 = time.perf_counter()
        optimise(policy, samples, optimizer, accelerator, config, step,
                 (expected, agent, game) if expected is not None else None)
        t3 = time.perf_counter()
        if step <= warmup:
            continue
        flops = update_flops(policy.model, samples, shape, micro_batch_size,
                             config.updates_per_step, share_prefix)
        rows.append({"rollout": t1 - t0, "rewards": t2 - t1, "update": t3 - t2,
                     "step": t3 - t0, "refresh": refresh, "episodes": len(records),
                     "decisions": sum(len(r.decisions) for r in records),
                     "trained": len(samples),
                     "fallback_rate": sum(d.parse_failed for r in records for d in r.decisions)
                     / max(1, sum(len(r.decisions) for r in records)), **flops})

    def mean(key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    result = {key: mean(key) for key in rows[0]}
    every = int(config.oracle_every or 1)
    result.update(oracle=oracle.oracle.kind if oracle else "off", oracle_every=every,
                  oracle_top=config.oracle_top, oracle_episodes=config.oracle_episodes,
                  candidates=len(getattr(oracle.oracle, "library", {})) if oracle else 0,
                  oracle_share=(result["refresh"] / every)
                  / (result["step"] + result["refresh"] / every))
    result.update(game=game_name, model=model_name, steps=steps, **shape,
                  update_flops_per_s=sum(r["flops"] for r in rows) / sum(r["update"]
                                                                         for r in rows))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=["ipd", "kuhn"])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--micro-batch-size", type=int, default=64)
    parser.add_argument("--matmul-n", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-share-prompt-prefix", action="store_true",
                        help="run every decision's whole prompt through the loss's passes")
    parser.add_argument("--no-oracle", action="store_true",
                        help="the fixed pools only: no oracle groups, no refresh")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    share = not args.no_share_prompt_prefix

    peak = matmul_flops(args.matmul_n, args.repeat)
    games = [bench_game(g, args.model, args.steps, args.warmup, args.micro_batch_size, share,
                        oracle_on=not args.no_oracle) for g in args.games]
    peak_after = matmul_flops(args.matmul_n, args.repeat)  # the machine may be shared
    best_peak = max(peak["flops_per_s"], peak_after["flops_per_s"])
    for g in games:
        g["share_of_matmul_flops"] = g["update_flops_per_s"] / best_peak
    report = {"machine": machine(), "matmul": [peak, peak_after], "share_prompt_prefix": share,
              "command": " ".join(["python", *sys.argv]), "games": games}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0

    m = report["machine"]
    print(f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} "
          f"({m['torch_threads']} threads), load average {m['load_average_1min']:.1f}")
    print(f"Dense fp32 matmul ({args.matmul_n}²): {best_peak / 1e9:.1f} GFLOP/s "
          f"(before {peak['flops_per_s'] / 1e9:.1f}, after {peak_after['flops_per_s'] / 1e9:.1f})")
    print(f"Shared prompt prefix in the loss's passes: {'on' if share else 'off'}")
    print()
    print("| game | s/step | rollout | rewards+metrics | gradient step | decisions (trained) "
          "| tokens (padded) | update GFLOP/s | share of matmul |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for g in games:
        step = g["step"]
        print(f"| {g['game']} | {step:.2f} | {g['rollout']:.2f} ({g['rollout'] / step:.0%}) | "
              f"{g['rewards'] * 1e3:.1f} ms ({g['rewards'] / step:.2%}) | "
              f"{g['update']:.2f} ({g['update'] / step:.0%}) | "
              f"{g['decisions']:.0f} ({g['trained']:.0f}) | "
              f"{g['tokens']:.0f} ({g['padded_tokens']:.0f}) | "
              f"{g['update_flops_per_s'] / 1e9:.1f} | {g['share_of_matmul_flops']:.0%} |")
    if args.no_oracle:
        return 0
    print()
    print("| game | oracle | candidates × episodes | refresh s | s/step | refresh / step | K "
          "| oracle share of a step at K |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for g in games:
        shape = (f"{g['candidates']} × {g['oracle_episodes']}" if g["oracle"] == "population"
                 else "exact")
        print(f"| {g['game']} | {g['oracle']} | {shape} | {g['refresh']:.2f} | "
              f"{g['step']:.2f} | {g['refresh'] / g['step']:.0%} | {g['oracle_every']} | "
              f"{g['oracle_share']:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
