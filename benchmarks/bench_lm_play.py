"""LM play throughput: decisions/second of batched play versus one episode at a time.

The SPEC's loop is one batched `generate` per engine step for every live episode; the paper's
was one episode at a time. Both are timed here with the same agent (`LMAgent`), game and
opponents: `--episodes` episodes in one lock-step `Engine` (every opponent of the train pool in
turn, seeds 0..), then the first `--single` of those episodes each alone in its own `Engine`.
Rates are agent decisions per wall-clock second and per CPU-second of the process (the latter
robust to other load on a shared machine); the speed-up is their ratio. For reference, the same
episodes are also played with the paper's loop (`PaperLoopPlayer`: one `transformers`
`generate` per decision, until EOS).

    python benchmarks/bench_lm_play.py                              # tiny, 64 IPD episodes
    python benchmarks/bench_lm_play.py --models tiny smollm2-135m --json
    python benchmarks/bench_lm_play.py --device cuda --episodes 256

A warm-up step runs first (lazy initialisation, allocator), untimed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from sepo.agents import LMAgent, SamplingConfig, build_prompt
from sepo.engine import Decision, DecisionRequest, Engine, Episode, EpisodeRecord, Player
from sepo.games import get_game
from sepo.games.base import Game
from sepo.machine import cpu_name
from sepo.prompts import chat_messages


def machine(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
        "platform": platform.platform(), "device": device,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def episodes_for(game: Game, agent: Player, count: int, first_seed: int = 0) -> list[Episode]:
    pool = [game.strategies[n] for n in game.pools["train"]]
    return [Episode(game, agent, pool[k % len(pool)], first_seed + k) for k in range(count)]


class PaperLoopPlayer:
    """The paper's loop, for reference: each decision alone, one `transformers` `generate`
    call (batch 1, sampling, until EOS or `max_new_tokens`: no early stop on the action line),
    parsed by the game; a text naming no action goes through the agent's constrained
    fallback."""

    def __init__(self, agent: LMAgent) -> None:
        self.agent = agent
        self.name = f"{agent.name} (paper loop)"

    def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        agent, cfg = self.agent, self.agent.config
        decisions = []
        for r in requests:
            prompt = build_prompt(agent.tokenizer, chat_messages(r.game, r.state, r.seat,
                                                                 reasoning=cfg.reasoning))
            ids = torch.tensor([prompt.ids], device=agent.model.device)
            with torch.no_grad():
                out = agent.model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids),
                    max_new_tokens=cfg.new_tokens, do_sample=not cfg.greedy,
                    temperature=cfg.temperature or None, top_p=cfg.top_p, top_k=0,
                    pad_token_id=agent.pad_id, eos_token_id=agent.eos_ids)
            text = agent.tokenizer.decode(out[0, len(prompt.ids):], skip_special_tokens=True)
            action = r.game.parse(text, r.state, r.seat)
            failed = action is None
            if failed:
                (choice,) = agent.fallback([r], [text])
                action = choice.action
            decisions.append(Decision(action=action, text=text, parse_failed=failed))
        return decisions


def timed(run: Any, device: str) -> tuple[Any, float, float]:
    """(result, wall seconds, process CPU seconds) of `run()`."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def decisions_in(records: Sequence[EpisodeRecord]) -> int:
    return sum(len(r.decisions) for r in records)


def bench_model(name: str, game: Game, episodes: int, single: int, config: SamplingConfig,
                device: str) -> dict[str, Any]:
    from sepo.models import load_model

    model, tokenizer = load_model(name, device=device)
    agent = LMAgent(model, tokenizer, config, name=name)
    Engine(episodes_for(game, agent, 2, first_seed=10_000)).step()  # warm-up, untimed

    agent.reset_counts()
    records, wall_b, cpu_b = timed(lambda: Engine(episodes_for(game, agent, episodes)).run(),
                                   device)
    batched_failures = agent.parse_failure_rate
    tokens = [len(d.trace.completion_ids) for r in records for d in r.decisions]

    agent.reset_counts()
    singles: list[EpisodeRecord] = []
    wall_s = cpu_s = 0.0
    for episode in episodes_for(game, agent, single):
        recs, w, c = timed(lambda e=episode: Engine([e]).run(), device)
        singles.extend(recs)
        wall_s, cpu_s = wall_s + w, cpu_s + c

    paper = PaperLoopPlayer(agent)
    paper_records: list[EpisodeRecord] = []
    wall_p = cpu_p = 0.0
    for episode in episodes_for(game, paper, single):  # type: ignore[arg-type]
        recs, w, c = timed(lambda e=episode: Engine([e]).run(), device)
        paper_records.extend(recs)
        wall_p, cpu_p = wall_p + w, cpu_p + c

    n_b, n_s, n_p = decisions_in(records), decisions_in(singles), decisions_in(paper_records)
    result = {
        "model": name, "game": game.name, "parameters": sum(p.numel() for p in model.parameters()),
        "batched": {"episodes": episodes, "decisions": n_b, "wall_s": wall_b, "cpu_s": cpu_b,
                    "decisions_per_s": n_b / wall_b, "decisions_per_cpu_s": n_b / cpu_b,
                    "parse_failure_rate": batched_failures,
                    "mean_completion_tokens": sum(tokens) / len(tokens)},
        "one_at_a_time": {"episodes": single, "decisions": n_s, "wall_s": wall_s,
                          "cpu_s": cpu_s, "decisions_per_s": n_s / wall_s,
                          "decisions_per_cpu_s": n_s / cpu_s,
                          "parse_failure_rate": agent.parse_failure_rate},
        "paper_loop": {"episodes": single, "decisions": n_p, "wall_s": wall_p, "cpu_s": cpu_p,
                       "decisions_per_s": n_p / wall_p, "decisions_per_cpu_s": n_p / cpu_p},
    }
    result["speedup_wall"] = (result["batched"]["decisions_per_s"]
                              / result["one_at_a_time"]["decisions_per_s"])
    result["speedup_cpu"] = (result["batched"]["decisions_per_cpu_s"]
                             / result["one_at_a_time"]["decisions_per_cpu_s"])
    result["speedup_vs_paper_loop_wall"] = (result["batched"]["decisions_per_s"]
                                            / result["paper_loop"]["decisions_per_s"])
    return result


def markdown(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| model | params | batched: episodes | decisions/s (per CPU-s) | one at a time: "
        "decisions/s (per CPU-s) | speed-up wall (CPU) | paper loop: decisions/s | "
        "speed-up vs paper loop | tokens/decision | parse failures |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        b, s = r["batched"], r["one_at_a_time"]
        lines.append(
            f"| {r['model']} | {r['parameters'] / 1e6:.1f} M | {b['episodes']} | "
            f"{b['decisions_per_s']:.1f} ({b['decisions_per_cpu_s']:.1f}) | "
            f"{s['decisions_per_s']:.2f} ({s['decisions_per_cpu_s']:.2f}) | "
            f"{r['speedup_wall']:.1f}× ({r['speedup_cpu']:.1f}×) | "
            f"{r['paper_loop']['decisions_per_s']:.2f} | {r['speedup_vs_paper_loop_wall']:.1f}× | "
            f"{b['mean_completion_tokens']:.1f} | {b['parse_failure_rate']:.0%} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny"])
    parser.add_argument("--game", default="ipd")
    parser.add_argument("--episodes", type=int, default=64, help="episodes played batched")
    parser.add_argument("--single", type=int, default=4,
                        help="of those, how many are also played one at a time")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--no-reasoning", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    config = SamplingConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                            reasoning=not args.no_reasoning, seed=0)
    game = get_game(args.game)
    results = [bench_model(m, game, args.episodes, args.single, config, args.device)
               for m in args.models]
    info = {"machine": machine(args.device), "sampling": {
        "temperature": config.temperature, "max_new_tokens": config.new_tokens,
        "reasoning": config.reasoning}, "results": results}
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        print()
    else:
        print(json.dumps(info["machine"]))
        print(json.dumps(info["sampling"]))
        print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
