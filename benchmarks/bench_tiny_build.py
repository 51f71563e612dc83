"""Build time and format competence of the `tiny` model; load times of `smollm2-135m`.

    python benchmarks/bench_tiny_build.py                  # build tiny (default config), check it
    python benchmarks/bench_tiny_build.py --smollm2        # also: GGUF conversion vs cached load
    python benchmarks/bench_tiny_build.py --json           # one JSON object on stdout

The tiny build runs into a fresh temporary cache (never the user's), so it is always a full
build. The format check asks the built model for answers to `--decisions` random-play decisions
per game and parses them with the game's parser, greedy and sampled (temperature 1), with and
without a reason sentence; `entropy` is the sampled actions' entropy over the log of the number
of legal actions (1 = uniform, as in the random-play data; 0 = always the same action).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from sepo.machine import cpu_name


def machine() -> dict[str, Any]:
    import torch

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "load_average": os.getloadavg()}


def bench_tiny(seed: int, decisions: int, overrides: dict[str, Any]) -> dict[str, Any]:
    from sepo.models import load_model
    from sepo.models.tiny import TinyConfig, build_info, build_tiny, format_check

    config = TinyConfig(**overrides)
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        path = build_tiny(config, seed, root=Path(root), progress=True)
        wall = time.perf_counter() - t0
        info = build_info(path) or {}
        model, tok = load_model(str(path), device="cpu", progress=False)
        checks: dict[str, Any] = {}
        for reasoning in (False, True):
            greedy = format_check(model, tok, decisions=decisions, seed=seed + 1,
                                  reasoning=reasoning, max_new_tokens=40 if reasoning else 12)
            sampled = format_check(model, tok, decisions=decisions, seed=seed + 1,
                                   reasoning=reasoning, do_sample=True,
                                   max_new_tokens=40 if reasoning else 12)
            checks["reasoning" if reasoning else "action_only"] = {
                game: {"greedy_parse_rate": greedy[game]["parse_rate"],
                       "sampled_parse_rate": sampled[game]["parse_rate"],
                       "sampled_entropy": round(sampled[game]["action_entropy"], 3),
                       "sampled_actions": sampled[game]["actions"],
                       "sampled_example": sampled[game]["example"]}
                for game in greedy
            }
    return {"config": config.model_dump(), "seed": seed, "build_wall_s": round(wall, 1),
            "seconds": info.get("seconds"), "parameters": info.get("parameters"),
            "vocab_size": info.get("vocab_size"), "games": info.get("games"),
            "loss_first": info.get("loss_first"), "loss_last": info.get("loss_last"),
            "format": checks}


def bench_smollm2(decisions: int) -> dict[str, Any]:
    from sepo.models import load_model
    from sepo.models.smollm2 import smollm2_path
    from sepo.models.tiny import format_check

    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        path = smollm2_path(root=Path(root), progress=False)
        first = time.perf_counter() - t0
        t1 = time.perf_counter()
        model, tok = load_model(str(path), device="cpu", progress=False)
        cached = time.perf_counter() - t1
        convert = json.loads((path / "sepo_convert.json").read_text())
        # out of the box (no SFT): does it answer in the games' format?
        greedy = format_check(model, tok, decisions=decisions, reasoning=False,
                              max_new_tokens=16)
    return {"first_load_s": round(first, 1), "gguf_read_s": convert["gguf_load_seconds"],
            "cached_load_s": round(cached, 2),
            "greedy_parse_rate_action_only": {g: r["parse_rate"] for g, r in greedy.items()},
            "greedy_actions": {g: r["actions"] for g, r in greedy.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--decisions", type=int, default=48, help="decisions per game checked")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a TinyConfig field, e.g. --set pretrain_steps=100")
    ap.add_argument("--smollm2", action="store_true", help="also time the smollm2-135m loads")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    report: dict[str, Any] = {"machine": machine(),
                              "tiny": bench_tiny(args.seed, args.decisions, overrides)}
    if args.smollm2:
        report["smollm2"] = bench_smollm2(min(args.decisions, 16))
    report["machine"]["load_average_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    t = report["tiny"]
    print(f"machine: {report['machine']}")
    print(f"tiny: {t['parameters']:,} parameters, vocab {t['vocab_size']}, "
          f"build {t['build_wall_s']} s ({t['seconds']}), "
          f"loss {t['loss_first']:.3f} -> {t['loss_last']:.3f}")
    for mode, games in t["format"].items():
        for game, r in games.items():
            print(f"  {mode:12s} {game:12s} greedy parse {r['greedy_parse_rate']:.2f}  sampled "
                  f"parse {r['sampled_parse_rate']:.2f}  entropy {r['sampled_entropy']:.2f}  "
                  f"{r['sampled_actions']}")
    if "smollm2" in report:
        print(f"smollm2-135m: {report['smollm2']}")


if __name__ == "__main__":
    main()
