"""Experiment tracking (`report_to`): TensorBoard by default, none, and a clear error for a
tracker that is not installed."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import pytest
from accelerate import Accelerator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sepo.errors import MissingDependencyError, UnknownNameError
from sepo.train import tracking
from sepo.train.config import SEPOConfig


def config(**fields: Any) -> SEPOConfig:
    return SEPOConfig(game="kuhn", model="x", out="r", **fields)


def test_report_to_names_known_installed_trackers() -> None:
    assert config().report_to == ["tensorboard"]
    assert config(report_to="none").report_to == []
    assert config(report_to=["tensorboard", "tensorboard"]).report_to == ["tensorboard"]
    with pytest.raises(UnknownNameError, match=r"tracker 'wandbb'.*mlflow, none, tensorboard"):
        config(report_to="wandbb")
    for name in ("wandb", "mlflow"):
        if importlib.util.find_spec(name) is None:
            with pytest.raises(MissingDependencyError, match=rf"sepo\[{name}\]"):
                config(report_to=[name])


def test_tensorboard_gets_each_rows_finite_numbers_and_a_resume_replaces_later_steps(
        tmp_path: Path) -> None:
    def run(start: int, rows: dict[int, float]) -> None:
        accelerator = Accelerator(cpu=True, log_with=["tensorboard"], project_dir=str(tmp_path))
        tracking.start_trackers(accelerator, {"lr": 1e-4, "lambdas": {"exploit": 1.5}}, start)
        for step, loss in rows.items():
            tracking.log_row(accelerator, {"step": step, "loss": loss, "kl": math.nan,
                                           "eval_safety": None if step % 2 else -loss}, step)
        accelerator.end_training()

    run(0, {1: 0.5, 2: 0.4, 3: 0.3})
    run(2, {3: 0.25})  # resumed from step 2: step 3 is recomputed
    events = EventAccumulator(str(tmp_path / tracking.TENSORBOARD_DIR))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["eval/safety", "train/loss"]  # NaN/None left out
    loss = {e.step: e.value for e in events.Scalars("train/loss")}
    assert loss == pytest.approx({1: 0.5, 2: 0.4, 3: 0.25})
    assert [(e.step, e.value) for e in events.Scalars("eval/safety")] == [(2, pytest.approx(-0.4))]


def test_no_tracker_writes_nothing(tmp_path: Path) -> None:
    accelerator = Accelerator(cpu=True, project_dir=str(tmp_path))
    tracking.start_trackers(accelerator, {}, 0)
    tracking.log_row(accelerator, {"step": 1, "loss": 0.5}, 1)
    assert list(tmp_path.iterdir()) == []
    assert tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "p": Path("x")}) == {
        "a.b": 1, "a.c": "[1, 2]", "p": "x"}
