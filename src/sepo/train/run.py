"""One SEPO run from a validated config, as `sepo train` starts it, and its summary.

Importing this module is cheap: the trainer (torch, seconds) is imported once the model is
known to exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sepo.metrics import json_safe
from sepo.train.config import SEPOConfig

if TYPE_CHECKING:
    from sepo.train.sepo import RunResult


def train_run(config: SEPOConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train `config` with `train_sepo` and return `run_summary`. A mistyped model name or
    path is refused before the run directory is made and before the trainer is imported."""
    from sepo.models.loading import MODEL_NAMES, resolve

    if config.model not in MODEL_NAMES:  # (the embedded names are built on first use)
        resolve(config.model, progress=False)
    # Imported once the options are valid: the trainer brings in torch (seconds).
    from sepo.train.sepo import train_sepo

    return run_summary(config, train_sepo(config, progress=progress))


def run_summary(config: SEPOConfig, result: RunResult) -> dict[str, Any]:
    """What `sepo train --json` prints: where the run is, its condition, its steps and its best
    and final checkpoints with their evaluation."""
    return {
        "run_dir": str(result.run_dir),
        "condition": config.condition,
        "steps": result.steps,
        "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        "best_step": result.best_step,
        "best_safety": result.best_safety,
        "final": json_safe(result.final),
    }
