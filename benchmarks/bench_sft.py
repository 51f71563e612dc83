"""SFT throughput: demonstrator-data generation (examples/s) and supervised fine-tuning
(tokens/s) on the `tiny` model.

Data: each game's SFT episodes (its demonstrator mixture against every non-held-out strategy)
generated in memory, best of `--repeat`, per CPU-second of the process and per wall second;
then the whole `sepo sft-data all` path, JSONL and card written.

SFT: `train_sft` on the all-games data for `--steps` optimizer steps of `--batch-size`
examples, once per `--threads` value (torch intra-op threads). Tokens are the non-padding
tokens of prompt + completion that went through forward and backward (TRL's
`num_input_tokens_seen`); time is the training loop alone (no data preparation, no eval).

    python benchmarks/bench_sft.py                    # markdown tables
    python benchmarks/bench_sft.py --json             # one JSON object
    python benchmarks/bench_sft.py --model /path/to/ckpt --threads 2 --steps 20

Two behavioural modes sit beside the throughput one (docs/SFT.md):

    python benchmarks/bench_sft.py behaviour          # base vs SFT vs the demonstrator mixture
    python benchmarks/bench_sft.py reads --games auction --checkpoints CKPT
                                                      # does the agent state its true situation?
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sepo.games import game_names, get_game
from sepo.machine import cpu_name
from sepo.sft.data import game_examples, generate_sft_data


def machine() -> dict[str, Any]:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "load_average_1min": load,
            "python": platform.python_version(), "torch": torch.__version__}


def bench_data(games: list[str], episodes_per_opponent: int, repeat: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for name in games:
        game = get_game(name)
        best_cpu = best_wall = float("inf")
        n = 0
        for _ in range(repeat):
            c0, w0 = time.process_time(), time.perf_counter()
            episodes = game_examples(game, episodes_per_opponent=episodes_per_opponent, seed=0)
            best_cpu = min(best_cpu, time.process_time() - c0)
            best_wall = min(best_wall, time.perf_counter() - w0)
            n = sum(len(e) for e in episodes)
        rows.append({"game": name, "episodes": len(episodes), "examples": n,
                     "cpu_s": best_cpu, "wall_s": best_wall,
                     "examples_per_cpu_s": n / best_cpu, "examples_per_s": n / best_wall})
    with tempfile.TemporaryDirectory() as tmp:
        c0, w0 = time.process_time(), time.perf_counter()
        card = generate_sft_data(games, Path(tmp) / "d",
                                 episodes_per_opponent=episodes_per_opponent)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        size = sum(f.stat().st_size for f in (Path(tmp) / "d").iterdir())
    total = sum(card["examples"].values())
    return {"per_game": rows, "write_all": {
        "examples": total, "cpu_s": cpu, "wall_s": wall, "examples_per_cpu_s": total / cpu,
        "examples_per_s": total / wall, "bytes": size}}


def bench_sft(model: str, games: list[str], steps: int, batch_size: int,
              threads: list[int], share_prefix: bool = True) -> list[dict[str, Any]]:
    import torch
    from transformers import TrainerCallback

    from sepo.models import load_model
    from sepo.sft.train import SFTRunConfig, train_sft

    class CpuClock(TrainerCallback):
        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            self.start = time.process_time()

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            self.cpu_s = time.process_time() - self.start

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate_sft_data(games, data, episodes_per_opponent=10)
        for n in threads:
            torch.set_num_threads(n)
            pair = load_model(model, device="cpu", dtype="float32", progress=False)
            clock = CpuClock()
            result = train_sft(games, pair, data, Path(tmp) / f"ckpt-{n}", SFTRunConfig(
                max_steps=steps, batch_size=batch_size, progress=False, device="cpu",
                share_prompt_prefix=share_prefix),
                callbacks=[clock])
            out.append({"threads": n, "parameters": result.parameters, "steps": result.steps,
                        "batch_size": batch_size, "tokens": result.train_tokens,
                        "wall_s": result.train_seconds, "cpu_s": clock.cpu_s,
                        "tokens_per_s": result.tokens_per_second,
                        "s_per_step": result.train_seconds / result.steps})
    return out


# ------------------------------------------------------------------ behaviour (SPEC item 3)
def _report_row(report: Any) -> dict[str, Any]:
    d = report.to_dict()
    keys = ["pay_per_round", "exploit", "collusion", "externality", "safety",
            "parse_failure_rate"]
    if d.get("exact_exploitability") is not None:
        keys.append("exact_exploitability")
    return {k: d[k] for k in keys} | {"ci95": {k: d["ci95"][k] for k in keys},
                                      "per_opponent": d["per_opponent"]}


def titfortat_agreement(records: list[Any], n_boot: int = 1000, seed: int = 0,
                        ) -> tuple[float, list[float]]:
    """Share of the agent's IPD decisions that equal TitForTat's (COOPERATE first, then the
    other's last move), with a 95% bootstrap interval over episodes."""
    per_episode = [[r.actions[0] == (rec.rounds[t - 1].actions[1] if t else "COOPERATE")
                    for t, r in enumerate(rec.rounds)] for rec in records]
    share, ci, _ = share_with_interval(per_episode, n_boot, seed)
    return share, ci


def share_with_interval(hits_by_episode: Iterable[list[bool]], n_boot: int = 1000,
                        seed: int = 0) -> tuple[float, list[float], int]:
    """The share of hits over all episodes, its 95% bootstrap interval (episodes resampled),
    and the number of hits counted."""
    import numpy as np

    arr = np.array([(sum(h), len(h)) for h in hits_by_episode], dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(arr), size=(n_boot, len(arr)))
    boot = arr[idx, 0].sum(1) / arr[idx, 1].sum(1)
    return (float(arr[:, 0].sum() / arr[:, 1].sum()),
            [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
            int(arr[:, 1].sum()))


def titfortat_run(args: argparse.Namespace, out: Path, config: Any, base: Any,
                  timed_eval: Any) -> dict[str, Any]:
    """IPD with TitForTat-only data: how often the SFT agent does what TitForTat would,
    against the train pool, sampled at `--temperature` and greedy (and the base model's rate
    at `--temperature`, for reference)."""
    from sepo.agents import LMAgent, SamplingConfig
    from sepo.models import load_model
    from sepo.sft.train import train_sft

    data = out / "data-ipd-titfortat"
    generate_sft_data("ipd", data, episodes_per_opponent=args.titfortat_episodes_per_opponent,
                      demonstrators=["TitForTat"], overwrite=True)
    sft = train_sft("ipd", args.model, data, out / "ckpt-ipd-titfortat", config, overwrite=True)
    lm, tok = load_model(str(out / "ckpt-ipd-titfortat"), device="cpu", dtype="float32",
                         progress=False)
    row: dict[str, Any] = {"training": sft.model_dump(exclude={"config"})}
    players = {
        f"sft (T={args.temperature:g})": LMAgent(lm, tok, SamplingConfig(
            temperature=args.temperature, max_new_tokens=args.max_new_tokens), name="sft"),
        "sft (greedy)": LMAgent(lm, tok, SamplingConfig(
            temperature=0.0, max_new_tokens=args.max_new_tokens), name="sft-greedy"),
        f"base (T={args.temperature:g})": base,
    }
    for label, player in players.items():
        report, seconds = timed_eval("ipd", player, args.eval_episodes, roles=["train"])
        rate, ci = titfortat_agreement(report.records)
        d = report.to_dict()
        row[label] = {"agreement": rate, "ci95": ci, "eval_seconds": seconds,
                      "parse_failure_rate": d["parse_failure_rate"],
                      "pay_per_round": d["pay_per_round"],
                      "pay_per_round_ci95": d["ci95"]["pay_per_round"]}
    return row


def bench_behaviour(args: argparse.Namespace) -> dict[str, Any]:
    """Base vs SFT vs the demonstrator mixture itself, per game; and, for IPD, an agent
    fine-tuned on TitForTat-only data against the train pool."""
    from sepo.agents import LMAgent, SamplingConfig
    from sepo.evaluation import evaluate
    from sepo.models import load_model
    from sepo.sft.data import DemonstratorMixture
    from sepo.sft.train import SFTRunConfig, train_sft

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sampling = SamplingConfig(temperature=args.temperature, seed=0,
                              max_new_tokens=args.max_new_tokens)
    config = SFTRunConfig(epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                          progress=not args.quiet)

    def lm_agent(path: str, name: str) -> LMAgent:
        lm, tok = load_model(path, device="cpu", dtype="float32", progress=False)
        return LMAgent(lm, tok, sampling, name=name)

    def timed_eval(game: str, agent: Any, episodes: int, roles: Any = None) -> tuple[Any, float]:
        t0 = time.perf_counter()
        kw = {"roles": roles} if roles else {}
        report = evaluate(game, agent, episodes=episodes, seed=0, **kw)
        return report, time.perf_counter() - t0

    results: dict[str, Any] = {"settings": vars(args) | {"sampling": {
        "temperature": sampling.temperature, "max_new_tokens": sampling.new_tokens}},
        "games": {}}
    base = lm_agent(args.model, "base")

    def save() -> None:
        (out / "behaviour.json").write_text(json.dumps(results, indent=2))

    for name in [] if args.only_titfortat else args.games:
        data = out / f"data-{name}"
        # A rerun of the benchmark replaces its own earlier outputs in OUT.
        card = generate_sft_data(name, data, episodes_per_opponent=args.episodes_per_opponent,
                                 overwrite=True)
        sft = train_sft(name, args.model, data, out / f"ckpt-{name}", config, overwrite=True)
        agent = lm_agent(str(out / f"ckpt-{name}"), f"sft-{name}")
        row: dict[str, Any] = {"examples": card["examples"],
                               "training": sft.model_dump(exclude={"config"})}
        results["games"][name] = row
        for label, player, episodes in (("sft", agent, args.eval_episodes),
                                        ("base", base, args.eval_episodes),
                                        ("mixture", DemonstratorMixture(get_game(name)),
                                         args.mixture_episodes)):
            report, seconds = timed_eval(name, player, episodes)
            row[label] = _report_row(report) | {"eval_seconds": seconds, "episodes": episodes}
            save()
        if name == "ipd" and not args.skip_titfortat:
            results["ipd_titfortat"] = titfortat_run(args, out, config, base, timed_eval)
            save()
    if args.only_titfortat:
        results["ipd_titfortat"] = titfortat_run(args, out, config, base, timed_eval)
        save()
    return results


#: Where a situation splits into the agent's own state and the other's last move ("my value is
#: 4 and the other bid HIGH last round"); a plain " and " inside a clause ("2 hats and 1 ball",
#: "and the deal held") does not split it.
_CLAUSE_SPLIT = re.compile(r",? and (?=the other |I )")


def situation_clauses(situation: str) -> list[tuple[str, str]]:
    """`Game.situation` text as (kind, clause) pairs: "other" for a clause about the other
    player, "own" for the rest (a card, a value, the round)."""
    return [("other" if c.startswith("the other") else "own", c)
            for c in _CLAUSE_SPLIT.split(situation)]


class SituationWitness:
    """A player wrapper that keeps, for each decision, the true situation (`Game.situation`
    before the move) and the text the wrapped player wrote."""

    def __init__(self, player: Any) -> None:
        self.player = player
        self.name = player.name
        self.seen: list[tuple[int, str, str]] = []  # (episode id, situation, text)

    def decide(self, requests: Any) -> Any:
        truths = [r.episode.game.situation(r.episode.state, r.seat) for r in requests]
        answers = self.player.decide(requests)
        self.seen.extend((id(r.episode), s, a.text or "")
                         for r, s, a in zip(requests, truths, answers, strict=True))
        return answers


def situation_shares(seen: list[tuple[int, str, str]]) -> dict[str, dict[str, Any]]:
    """From `SituationWitness.seen`: the share of decisions whose text states the whole true
    situation, and the shares of "own" and "other" clauses stated (case and spacing ignored),
    each with a 95% bootstrap interval over episodes and its count."""
    hits: dict[str, dict[int, list[bool]]] = {"situation": {}, "own": {}, "other": {}}
    for episode, truth, text in seen:
        said = " ".join(text.lower().split())
        hits["situation"].setdefault(episode, []).append(truth.lower() in said)
        for kind, clause in situation_clauses(truth):
            hits[kind].setdefault(episode, []).append(clause.lower() in said)
    out = {}
    for kind, by_episode in hits.items():
        if by_episode:
            share, ci, n = share_with_interval(by_episode.values())
            out[kind] = {"share": share, "ci95": ci, "decisions": n}
    return out


def bench_reads(args: argparse.Namespace) -> dict[str, Any]:
    """Does a checkpoint read its prompt? Each checkpoint plays its game (all pools, `--eval-
    episodes` per opponent, sampled) and we count how often its reason sentence states the
    true situation, clause by clause: its own state (a value, a card) and the other's last
    move. An SFT agent writes the demonstrators' sentence, which always opens with the
    situation, so a clause it does not state correctly it stated wrongly (first-round clauses
    such as "the other has not bid yet" are counted too, and are easy)."""
    from sepo.agents import load_lm_agent
    from sepo.evaluation import evaluate

    rows = []
    for game, path in zip(args.games, args.checkpoints, strict=True):
        agent = SituationWitness(load_lm_agent(path, temperature=args.temperature, seed=0))
        report = evaluate(game, agent, episodes=args.eval_episodes, seed=0)
        rows.append({"game": game, "checkpoint": path,
                     "parse_failure_rate": report.to_dict()["parse_failure_rate"]}
                    | situation_shares(agent.seen))
    return {"settings": vars(args), "rows": rows}


def print_reads(results: dict[str, Any]) -> None:
    print("| game | checkpoint | whole situation | own clause | other's-move clause | "
          "decisions |")
    print("|---|---|---|---|---|---:|")
    for r in results["rows"]:
        cells = [_fmt(r[k]["share"], r[k]["ci95"]) if k in r else "n/a"
                 for k in ("situation", "own", "other")]
        print(f"| {r['game']} | {r['checkpoint']} | " + " | ".join(cells)
              + f" | {r['situation']['decisions']} |")


def _fmt(value: float | None, ci: list[float | None] | None) -> str:
    if value is None:
        return "n/a"
    if not ci or ci[0] is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def print_behaviour(results: dict[str, Any]) -> None:
    keys = ["pay_per_round", "exploit", "collusion", "externality", "safety",
            "parse_failure_rate"]
    print("| game | agent | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for name, row in results["games"].items():
        for label in ("base", "sft", "mixture"):
            if label not in row:
                continue
            r = row[label]
            cells = [_fmt(r[k], r["ci95"][k]) for k in keys]
            print(f"| {name} | {label} | " + " | ".join(cells) + " |")
        if "training" in row:
            s = row["training"]
            print(f"|  | (SFT: {s['train_examples']} examples, {s['steps']} steps, validation "
                  f"loss {s['eval_loss_initial']:.3f} → {s['eval_loss_final']:.3f}, "
                  f"{s['train_seconds']:.0f} s) |" + " |" * len(keys))
    if "ipd_titfortat" in results:
        t = results["ipd_titfortat"]
        print("\nIPD, TitForTat-only SFT, agreement with TitForTat against the train pool:")
        for label in [k for k in t if k != "training"]:
            print(f"- {label}: {_fmt(t[label]['agreement'], t[label]['ci95'])} "
                  f"(parse failures {t[label]['parse_failure_rate']:.3f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode")
    tp = sub.add_parser("throughput", help="examples/s of data, tokens/s of SFT (default)")
    bh = sub.add_parser("behaviour", help="base vs SFT vs the demonstrator mixture, per game")
    rd = sub.add_parser("reads", help="how often checkpoints state their true situation")
    rd.add_argument("--games", nargs="+", required=True, help="one game per checkpoint")
    rd.add_argument("--checkpoints", nargs="+", required=True)
    rd.add_argument("--eval-episodes", type=int, default=10)
    rd.add_argument("--temperature", type=float, default=0.8)
    rd.add_argument("--json", action="store_true")
    for p in (ap, tp, bh):
        p.add_argument("--games", nargs="+", default=game_names())
        p.add_argument("--model", default="tiny")
        p.add_argument("--json", action="store_true")
    for p in (ap, tp):
        p.add_argument("--episodes-per-opponent", type=int, default=50)
        p.add_argument("--repeat", type=int, default=3)
        p.add_argument("--steps", type=int, default=30)
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
        p.add_argument("--skip-sft", action="store_true", help="time data generation only")
        p.add_argument("--no-share-prompt-prefix", action="store_true",
                       help="SFT runs every example's whole prompt (a batch of one game's "
                            "data shares its system prompt otherwise)")
    bh.add_argument("--out", default="runs/sft-behaviour")
    bh.add_argument("--episodes-per-opponent", type=int, default=10)
    bh.add_argument("--epochs", type=float, default=2.0)
    bh.add_argument("--lr", type=float, default=None)
    bh.add_argument("--batch-size", type=int, default=16)
    bh.add_argument("--eval-episodes", type=int, default=20)
    bh.add_argument("--mixture-episodes", type=int, default=200)
    bh.add_argument("--temperature", type=float, default=1.0)
    bh.add_argument("--max-new-tokens", type=int, default=None)
    bh.add_argument("--skip-titfortat", action="store_true")
    bh.add_argument("--only-titfortat", action="store_true")
    bh.add_argument("--titfortat-episodes-per-opponent", type=int, default=10)
    bh.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    if args.mode == "reads" and len(args.games) != len(args.checkpoints):
        ap.error(f"give one game per checkpoint: {len(args.games)} games, "
                 f"{len(args.checkpoints)} checkpoints")
    behavioural = {"reads": (bench_reads, print_reads),
                   "behaviour": (bench_behaviour, print_behaviour)}
    if args.mode in behavioural:
        run, show = behavioural[args.mode]
        results = run(args)
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            show(results)
        return 0

    report: dict[str, Any] = {"machine": machine(),
                              "data": bench_data(args.games, args.episodes_per_opponent,
                                                 args.repeat)}
    if not args.skip_sft:
        report["sft"] = bench_sft(args.model, args.games, args.steps, args.batch_size,
                                  args.threads, not args.no_share_prompt_prefix)
        report["share_prompt_prefix"] = not args.no_share_prompt_prefix
    report["machine"]["load_average_1min_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    m = report["machine"]
    print(f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, torch {m['torch']}, "
          f"load average {m['load_average_1min']:.1f} → {m['load_average_1min_end']:.1f}\n")
    print("| game | episodes | examples | CPU s | examples/CPU-s | examples/s (wall) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in report["data"]["per_game"]:
        print(f"| {r['game']} | {r['episodes']} | {r['examples']} | {r['cpu_s']:.3f} | "
              f"{r['examples_per_cpu_s']:,.0f} | {r['examples_per_s']:,.0f} |")
    w = report["data"]["write_all"]
    print(f"\n`generate_sft_data` of {', '.join(args.games)} with files: {w['examples']} "
          f"examples, {w['bytes'] / 1e6:.1f} MB, in {w['cpu_s']:.2f} CPU-s "
          f"({w['examples_per_cpu_s']:,.0f} examples/CPU-s; {w['wall_s']:.2f} s wall, "
          f"{w['examples_per_s']:,.0f} examples/s)\n")
    if "sft" in report:
        print(f"SFT on {', '.join(args.games)}; shared prompt prefix: "
              f"{'on' if report['share_prompt_prefix'] else 'off'}\n")
        print("| threads | parameters | steps × batch | tokens | wall s | CPU s | s/step | "
              "tokens/s |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in report["sft"]:
            print(f"| {r['threads']} | {r['parameters']:,} | {r['steps']} × {r['batch_size']} | "
                  f"{r['tokens']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                  f"{r['s_per_step']:.2f} | {r['tokens_per_s']:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
