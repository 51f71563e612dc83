"""What unmerged LoRA adapters cost in rollouts: batched play with and without them.

SEPO with `--lora` samples its rollouts from the PEFT model, adapters unmerged (merging and
unmerging them around every rollout would drift bf16 base weights, and the reference is the
same model with adapters disabled). On one H100, SmolLM2-135M's LoRA rollouts were 3-5x slower
than full fine-tuning's for the same number of tokens (docs/GPU.md). This script isolates
that: the same episodes, played greedily by the same `LMAgent` in one lock-step `Engine`, by

- `plain`: the model as loaded;
- `lora`: the same model wrapped by `peft.get_peft_model` with SEPO's LoRA defaults (or
  `--targets`). LoRA's B matrices start at zero, so the adapted model computes the same
  function and, greedily, generates the same tokens: any difference in time is the adapters'
  own overhead.

    python benchmarks/bench_lora_rollout.py                          # tiny on the CPU
    python benchmarks/bench_lora_rollout.py --model smollm2-135m --device cuda --dtype bfloat16
    python benchmarks/bench_lora_rollout.py --model PATH --targets all-linear --rank 32

Each variant plays one untimed warm-up step first, then `--repeats` timed runs (the median is
reported).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from bench_lm_play import decisions_in, episodes_for, machine, timed
from sepo.agents import LMAgent, SamplingConfig
from sepo.engine import Engine
from sepo.games import get_game
from sepo.models import load_model
from sepo.train.config import SEPOConfig


def play(agent: LMAgent, game_name: str, episodes: int, repeats: int,
         device: str) -> dict[str, Any]:
    game = get_game(game_name)
    Engine(episodes_for(game, agent, 2, first_seed=10_000)).step()  # warm-up, untimed
    walls, records = [], []
    for _ in range(repeats):
        records, wall, _cpu = timed(lambda: Engine(episodes_for(game, agent, episodes)).run(),
                                    device)
        walls.append(wall)
    wall = statistics.median(walls)
    tokens = sum(len(d.trace.completion_ids) for r in records for d in r.decisions)
    actions = [d.action for r in records for d in r.decisions]
    return {"decisions": decisions_in(records), "generated_tokens": tokens, "wall_s": wall,
            "wall_s_all": walls, "decisions_per_s": decisions_in(records) / wall,
            "tokens_per_s": tokens / wall, "actions": actions}


def main(argv: Sequence[str] | None = None) -> int:
    fields = SEPOConfig.model_fields  # SEPO's LoRA defaults
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--game", default="ipd")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: sepo's)")
    parser.add_argument("--rank", type=int, default=fields["lora_r"].default)
    parser.add_argument("--targets", nargs="+",
                        default=fields["lora_target_modules"].default_factory(),
                        help="module names, or all-linear")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype,
                                  progress=False)
    config = SamplingConfig(temperature=0.0, seed=0)
    plain = play(LMAgent(model, tokenizer, config, name="plain"), args.game, args.episodes,
                 args.repeats, args.device)
    targets: Any = args.targets[0] if args.targets == ["all-linear"] else args.targets
    lora_config = LoraConfig(r=args.rank, lora_alpha=2 * args.rank,
                             lora_dropout=fields["lora_dropout"].default, target_modules=targets,
                             task_type="CAUSAL_LM")
    adapted = get_peft_model(model, lora_config).eval()
    lora_modules = sum(1 for n, _ in adapted.named_modules() if n.endswith("lora_A"))
    lora = play(LMAgent(adapted, tokenizer, config, name="lora"), args.game, args.episodes,
                args.repeats, args.device)

    same = plain.pop("actions") == lora.pop("actions")
    result = {
        "machine": machine(args.device), "model": args.model, "game": args.game,
        "dtype": str(next(model.parameters()).dtype), "episodes": args.episodes,
        "lora": {"rank": args.rank, "targets": args.targets, "adapted_modules": lora_modules},
        "plain": plain, "with_lora": lora, "same_actions": same,
        "lora_slowdown": lora["wall_s"] / plain["wall_s"],
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print(json.dumps(result["machine"]))
        print(f"{args.model} ({result['dtype']}), {args.game}, {args.episodes} episodes, "
              f"greedy; LoRA r={args.rank} on {lora_modules} modules ({args.targets})")
        print("| variant | decisions | tokens | wall s (median) | decisions/s | tokens/s |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, r in (("plain", plain), ("LoRA, unmerged", lora)):
            print(f"| {name} | {r['decisions']} | {r['generated_tokens']} | {r['wall_s']:.2f} | "
                  f"{r['decisions_per_s']:.1f} | {r['tokens_per_s']:.0f} |")
        print(f"LoRA slow-down: {result['lora_slowdown']:.2f}x; same greedy actions: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
