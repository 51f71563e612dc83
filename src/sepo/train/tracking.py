"""Experiment tracking through accelerate's trackers (`report_to`): TensorBoard by default,
Weights & Biases and MLflow where installed (`pip install 'sepo[wandb]'`, `'sepo[mlflow]'`).

Each step's metrics row goes to every tracker, from the main process only, under the tags
`train/<column>` and `eval/<metric>`. TensorBoard writes to `RUN_DIR/tb` and, on resume,
purges the events past the checkpoint, so its curves equal an uninterrupted run's. The run's
config goes to the trackers that keep one (W&B, MLflow), flattened to dotted keys.
https://huggingface.co/docs/accelerate/usage_guides/tracking
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sepo.errors import MissingDependencyError, UnknownNameError

#: What `report_to` may name; "none" (alone) turns tracking off.
TRACKERS = ("tensorboard", "wandb", "mlflow")
_INSTALL = {"tensorboard": "pip install tensorboard", "wandb": "pip install 'sepo[wandb]'",
            "mlflow": "pip install 'sepo[mlflow]'"}
#: The directory under RUN_DIR that TensorBoard writes (accelerate's project name).
TENSORBOARD_DIR = "tb"


def check_report_to(names: Sequence[str]) -> list[str]:
    """The trackers named, each known and installed: a one-line error otherwise."""
    names = list(dict.fromkeys(names))
    if names == ["none"]:
        return []
    for name in names:
        if name not in TRACKERS:
            raise UnknownNameError("tracker", name, (*TRACKERS, "none"))
        if importlib.util.find_spec(name) is None:
            raise MissingDependencyError(name, f"--report-to {name}", _INSTALL[name])
    return names


def start_trackers(accelerator: Any, config: Mapping[str, Any], start_step: int) -> None:
    """Open the accelerator's trackers (built with `log_with`, `project_dir` = RUN_DIR)."""
    if not accelerator.log_with:
        return
    accelerator.init_trackers(TENSORBOARD_DIR, init_kwargs={
        # Events past the checkpoint a run resumes from were recomputed: drop the old ones.
        "tensorboard": {"purge_step": start_step + 1},
    })
    flat = flatten(config)
    for tracker in accelerator.trackers:
        if tracker.name != "tensorboard":  # TensorBoard's hparams take scalars only
            tracker.store_init_configuration(flat)


def log_row(accelerator: Any, row: Mapping[str, Any], step: int) -> None:
    """One metrics row to every tracker: its finite numbers, as `train/…` and `eval/…`."""
    if not accelerator.log_with:
        return
    values = {(key.replace("_", "/", 1) if key.startswith("eval_") else f"train/{key}"):
              float(value) for key, value in row.items()
              if key != "step" and value is not None and math.isfinite(float(value))}
    accelerator.log(values, step=step)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys; lists and paths as text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple | Path):
            flat[name] = str(value)
        else:
            flat[name] = value
    return flat
