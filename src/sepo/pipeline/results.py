"""What a `sepo run` records once its stages are done: `results.json` (every evaluation and
training run found in the directory, the run config, the timings) and `timings.json`, with the
environment the numbers were made in (versions, CPU/GPU, the base build's weights digest)."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sepo.machine import cpu_name
from sepo.pipeline.config import RunConfig
from sepo.pipeline.layout import CONFIG_FILE, TIMINGS_FILE
from sepo.report import RESULTS_FILE, RESULTS_SCHEMA, condition_sort_key, write_json_atomic
from sepo.train.oracle import ORACLE_LOG


def write_results(config: RunConfig, timings: dict[str, float]) -> None:
    """results.json from every evaluation on disk (this invocation's and earlier ones')."""
    evaluations, training = [], []
    for game_dir in sorted(p for p in config.out.iterdir() if p.is_dir()):
        for sd in sorted(game_dir.glob("seed*")):
            seed = int(sd.name.removeprefix("seed"))
            conditions = {p.stem: json.loads(p.read_text()) for p in (sd / "eval").glob("*.json")}
            evaluations.extend(conditions[c] for c in sorted(conditions, key=condition_sort_key))
            # Every trained condition's directory: SEPO, reward-only and any further ones.
            runs = [p.name for p in sd.iterdir() if p.name != "sft"
                    and (p / "metrics.csv").exists() and (p / "config.json").exists()]
            for condition in sorted(runs, key=condition_sort_key):
                metrics = sd / condition / "metrics.csv"
                trained = json.loads((sd / condition / "config.json").read_text())
                oracle = sd / condition / ORACLE_LOG
                training.append({
                    "game": game_dir.name, "seed": seed, "condition": condition,
                    # runs from before the setting existed used per-group scaling
                    "advantage": trained.get("advantage", "group"),
                    "run_dir": str((sd / condition).relative_to(config.out)),
                    "metrics_csv": str(metrics.relative_to(config.out)),
                    **({"oracle_log": str(oracle.relative_to(config.out))}
                       if oracle.exists() else {}),
                })
    timings_path = config.out / TIMINGS_FILE
    history = json.loads(timings_path.read_text()) if timings_path.exists() else []
    history.append({"finished": _now(), **{k: round(v, 2) for k, v in timings.items()}})
    write_json_atomic(timings_path, history)
    write_json_atomic(config.out / RESULTS_FILE, {
        "schema": RESULTS_SCHEMA,
        "created": _now(),
        "sepo_version": _version(),
        "config": json.loads((config.out / CONFIG_FILE).read_text()),
        "evaluations": evaluations,
        "training": training,
        "timings": history[-1],
        "environment": environment(config),
    })


def environment(config: RunConfig) -> dict[str, Any]:
    """Where the numbers were made. Seeded runs repeat bit for bit on one host, but float
    rounding differs between CPUs (and GPUs), so a tiny build, and all trained from it, can
    differ elsewhere (docs/BENCHMARKS.md, "Reproducibility across machines"): the versions,
    the device and the base build's weights digest say which case a comparison is."""

    import torch

    from sepo.models import resolve
    from sepo.models.tiny import build_info
    from sepo.models.util import weights_digest

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    env: dict[str, Any] = {
        "python": platform.python_version(),
        **{p: installed(p) for p in ("torch", "transformers", "trl", "peft", "accelerate")},
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "base_weights_digest": None,
    }
    # Only a tiny build's digest: hashing a large base model would read all of its weights.
    path = Path(resolve(config.model, progress=False))
    info = build_info(path) if path.is_dir() else None
    if info is not None and info.get("name") == "tiny":
        if "weights_digest" in info:
            env["base_weights_digest"] = info["weights_digest"]
        else:  # built before builds recorded it; tiny loads in about a second
            from sepo.models import load_model

            model, _ = load_model(str(path), device="cpu", dtype="float32", progress=False)
            env["base_weights_digest"] = weights_digest(model)
    return env


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _version() -> str:
    try:
        return version("sepo")
    except PackageNotFoundError:
        return "unknown"


__all__ = ["environment", "write_results"]
