"""Run directories and atomic checkpoints of a SEPO run.

Layout of RUN_DIR:

    config.json                 the run's SEPOConfig
    metrics.csv                 one row per step (eval columns filled at checkpoints)
    tb/                         TensorBoard events
    checkpoints/step-000010/    model (save_pretrained) + tokenizer, so `--model` accepts it,
                                plus training.pt (optimizer, scheduler, RNG states) and
                                trainer_state.json
    best/                       model + tokenizer + eval.json of the best checkpoint by Safety

A checkpoint is written into a hidden temporary directory beside its final place and renamed
into place with `os.replace`, which is atomic on one file system: a crash mid-write leaves the
previous checkpoints untouched and at worst a `.tmp-*` directory, which the next save removes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sepo.errors import SepoError

CHECKPOINTS = "checkpoints"
BEST = "best"
CONFIG = "config.json"
METRICS = "metrics.csv"
TRAINING_STATE = "training.pt"
TRAINER_STATE = "trainer_state.json"
EVAL = "eval.json"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


@dataclass(slots=True)
class TrainerState:
    """What the loop itself must remember across a resume."""

    step: int = 0
    best_safety: float | None = None
    best_step: int | None = None
    last_eval: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> TrainerState:
        return cls(**json.loads(text))


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint of the run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / TRAINER_STATE).exists():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1][1] if checkpoints else None


# ------------------------------------------------------------------ random states
def rng_state(extra: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every random state a step consumes: Python, NumPy, torch (CPU and CUDA), and the
    named generators (e.g. the agent's sampling generator)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in (extra or {}).items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any],
                  extra: Mapping[str, torch.Generator] | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("generators", {})
    for name, generator in (extra or {}).items():
        if name not in saved:
            raise SepoError(f"the checkpoint has no state for the {name!r} random generator")
        generator.set_state(saved[name])


# ------------------------------------------------------------------ atomic directories
def _fresh_tmp(final: Path) -> Path:
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _fsync_tree(root: Path) -> None:
    """Flush file contents to disk before the rename makes them visible."""
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def write_dir_atomically(final: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` to fill a temporary directory, then move it to `final` in one rename.

    A previous `final` (re-saving the same step, or `best/`) is first moved aside and deleted
    after the swap, so a reader never sees a half-written directory.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = _fresh_tmp(final)
    try:
        write(tmp)
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_checkpoint(run_dir: Path, step: int, *, model: Any, tokenizer: Any,
                    training_state: Mapping[str, Any], trainer_state: TrainerState,
                    agent_settings: Mapping[str, Any] | None = None) -> Path:
    """Write `checkpoints/step-XXXXXX/` atomically: weights (save_pretrained: the full model,
    or only the LoRA adapter), tokenizer, the agent settings (`sepo_agent.json`: how the model
    answers, read by `load_lm_agent`), `training.pt` (optimizer, scheduler, RNG states) and
    `trainer_state.json` (written last: its presence marks the checkpoint complete)."""
    from sepo.agents.lm import write_agent_settings

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if agent_settings is not None:
            write_agent_settings(tmp, **agent_settings)
        torch.save(dict(training_state), tmp / TRAINING_STATE)
        (tmp / TRAINER_STATE).write_text(trainer_state.to_json())

    return write_dir_atomically(Path(run_dir) / CHECKPOINTS / step_dir_name(step), write)


def load_training_state(checkpoint: Path) -> tuple[dict[str, Any], TrainerState]:
    checkpoint = Path(checkpoint)
    if not (checkpoint / TRAINER_STATE).exists():
        raise SepoError(f"{checkpoint} is not a complete SEPO checkpoint "
                        f"(no {TRAINER_STATE})")
    # weights_only=False: the file holds Python/NumPy RNG states (tuples, arrays) that the
    # restricted unpickler refuses; it is our own file, written by save_checkpoint.
    training = torch.load(checkpoint / TRAINING_STATE, map_location="cpu", weights_only=False)
    return training, TrainerState.from_json((checkpoint / TRAINER_STATE).read_text())


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep=0: keep all)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def save_best(run_dir: Path, checkpoint: Path, evaluation: Mapping[str, Any]) -> Path:
    """Copy a checkpoint's model and tokenizer (not its optimizer) to `best/`, atomically,
    with the evaluation that made it the best."""

    def write(tmp: Path) -> None:
        for item in Path(checkpoint).iterdir():
            if item.name == TRAINING_STATE:
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)
        (tmp / EVAL).write_text(json.dumps(dict(evaluation), indent=2, allow_nan=False))

    return write_dir_atomically(Path(run_dir) / BEST, write)


# ------------------------------------------------------------------ metrics.csv
def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


class MetricsLog:
    """`metrics.csv`: a fixed header, one row per step, flushed after every row.

    On resume, rows after the checkpoint's step (written before a crash) are dropped, so the
    file of a resumed run equals that of an uninterrupted one.
    """

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = list(columns)

    def start(self, resume_step: int | None) -> None:
        if resume_step is None or not self.path.exists():
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.columns)
            return
        with open(self.path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows or rows[0][:1] != self.columns[:1] or not set(rows[0]) <= set(self.columns):
            raise SepoError(f"{self.path} does not have the expected columns; cannot resume")
        # A run started by an older sepo may lack newer columns: they stay empty for its rows.
        at = {name: i for i, name in enumerate(rows[0])}
        kept = [self.columns, *([r[at[c]] if c in at else "" for c in self.columns]
                                for r in rows[1:] if r and int(r[0]) <= resume_step)]
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows(kept)
        os.replace(tmp, self.path)

    def append(self, row: Mapping[str, Any]) -> None:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"metrics row has unknown columns {sorted(unknown)}")
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([_cell(row.get(c)) for c in self.columns])


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv as dicts of strings."""
    with open(Path(run_dir) / METRICS, newline="") as fh:
        return list(csv.DictReader(fh))
