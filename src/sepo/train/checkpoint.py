"""Run directories and atomic checkpoints of a SEPO run.

Layout of RUN_DIR:

    config.json                 the run's SEPOConfig
    metrics.csv                 one row per step (eval columns filled at checkpoints)
    tb/                         TensorBoard events
    checkpoints/step-000010/    model (save_pretrained) + tokenizer, so `--model` accepts it,
                                plus sepo_agent.json, and:
        training/tensors.safetensors   every tensor of the training state: optimizer moments
                                       and steps, torch (CPU, CUDA) and named generator RNG
                                       states, under stable keys (`optimizer/state/0/exp_avg`)
        training/state.json     the rest of it: optimizer param groups, scheduler state,
                                Python and NumPy RNG states, agent call count
        training/metrics.csv    metrics.csv's rows up to and including this step
        trainer_state.json      the loop's own state; written last, it marks the checkpoint
                                complete
    best/                       model + tokenizer + eval.json of the best checkpoint by Safety

No checkpoint file is a pickle: loading one reads only safetensors and JSON, so a file planted
in a run directory cannot run code on `--resume`. Checkpoints of older sepo versions
(`training.pt`, a pickle) are refused, never unpickled.

A checkpoint is written into a hidden temporary directory beside its final place and renamed
into place with `os.replace`, which is atomic on one file system: a crash mid-write leaves the
previous checkpoints untouched and at worst a `.tmp-*` directory, which the next save removes.
The checkpoint carries the metrics rows up to its step, and `metrics.csv` is appended only
after the checkpoint is in place; on resume metrics.csv is rebuilt from the checkpoint's copy.
So a step's state and its metrics row are committed by the same rename: a kill at any point
loses no checkpointed step, and rows past the last checkpoint (recomputed identically on
resume) are dropped.
"""

from __future__ import annotations

import csv
import io
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

from sepo import rundir
from sepo.errors import SepoError

CHECKPOINTS = "checkpoints"
BEST = "best"
CONFIG = "config.json"
METRICS = "metrics.csv"
TRAINER_STATE = "trainer_state.json"
#: Subdirectory of a checkpoint with what resuming needs beyond the weights. A subdirectory
#: keeps `tensors.safetensors` out of the `*.safetensors` that weight loaders glob.
TRAINING_DIR = "training"
TRAINING_TENSORS = "tensors.safetensors"
TRAINING_JSON = "state.json"
METRICS_COPY = "metrics.csv"
#: The pickled training state of sepo versions before the safetensors + JSON format.
LEGACY_TRAINING_STATE = "training.pt"
_FORMAT = "sepo-training-state-1"
EVAL = "eval.json"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


@dataclass(slots=True)
class TrainerState:
    """What the loop itself must remember across a resume."""

    step: int = 0
    best_safety: float | None = None
    best_step: int | None = None
    last_eval: dict[str, float | None] = field(default_factory=dict)
    #: The safety-budget multipliers and their windows (`SafetyBudgets.state`); {} without.
    budgets: dict[str, Any] = field(default_factory=dict)
    #: The oracle's last refresh (`sepo.train.oracle.Refresh`, as JSON); {} without.
    oracle: dict[str, Any] = field(default_factory=dict)

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


# ------------------------------------------------------------------ pickle-free training state
#: Marks a JSON object that stands for a value JSON cannot hold (a tensor, a tuple, a dict with
#: non-string keys, a NumPy array, a non-finite float).
_TAG = "__sepo__"
#: NumPy dtypes a training state may hold (NumPy's MT19937 key is uint32).
_NDARRAY_DTYPES = frozenset({"uint32", "uint64", "int32", "int64", "float32", "float64"})


class _BadState(ValueError):
    """A training state file's content is not what `save_checkpoint` writes."""


def _encode(value: Any, path: tuple[str, ...], tensors: dict[str, torch.Tensor]) -> Any:
    """`value` as JSON, its tensors moved to `tensors` under their path (`optimizer/state/0/
    exp_avg`): stable keys, so one state always gives the same files."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {_TAG: "float", "value": repr(value)}
    if isinstance(value, torch.Tensor):
        key = "/".join(path)
        if key in tensors:
            raise ValueError(f"two tensors of the training state have the key {key!r}")
        tensors[key] = value.detach().to("cpu").contiguous()
        return {_TAG: "tensor", "key": key}
    if isinstance(value, np.ndarray):
        if str(value.dtype) not in _NDARRAY_DTYPES:
            raise ValueError(f"cannot store a NumPy array of {value.dtype} at {path}")
        return {_TAG: "ndarray", "dtype": str(value.dtype), "shape": list(value.shape),
                "data": value.ravel().tolist()}
    if isinstance(value, np.generic):
        return _encode(value.item(), path, tensors)
    if isinstance(value, tuple):
        return {_TAG: "tuple", "items": [_encode(v, (*path, str(i)), tensors)
                                         for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, (*path, str(i)), tensors) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value) and _TAG not in value:
            return {k: _encode(v, (*path, k), tensors) for k, v in value.items()}
        # Optimizer state is keyed by parameter index: JSON would turn the ints into strings,
        # which load_state_dict silently ignores.
        if not all(isinstance(k, str | int) and not isinstance(k, bool) for k in value):
            raise ValueError(f"cannot store a dict with keys {list(value)[:3]} at {path}")
        return {_TAG: "dict", "items": [[k, _encode(v, (*path, str(k)), tensors)]
                                        for k, v in value.items()]}
    raise ValueError(f"cannot store a {type(value).__name__} at {'/'.join(path)}")


def _decode(value: Any, tensors: Mapping[str, torch.Tensor], used: set[str]) -> Any:
    """Inverse of `_encode`. Builds only JSON values, tuples, dicts, tensors from `tensors` and
    NumPy arrays of plain dtypes: anything else is refused."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [_decode(v, tensors, used) for v in value]
    if not isinstance(value, dict):
        raise _BadState(f"unexpected {type(value).__name__}")
    if _TAG not in value:
        return {k: _decode(v, tensors, used) for k, v in value.items()}
    tag = value[_TAG]
    if tag == "tensor":
        key = value["key"]
        if not isinstance(key, str) or key not in tensors:
            raise _BadState(f"no tensor {key!r} in {TRAINING_TENSORS}")
        used.add(key)
        return tensors[key]
    if tag == "tuple":
        return tuple(_decode(v, tensors, used) for v in value["items"])
    if tag == "dict":
        out = {}
        for k, v in value["items"]:
            if not isinstance(k, str | int) or isinstance(k, bool):
                raise _BadState(f"unexpected dict key {k!r}")
            out[k] = _decode(v, tensors, used)
        return out
    if tag == "ndarray":
        dtype, shape, data = value["dtype"], value["shape"], value["data"]
        if dtype not in _NDARRAY_DTYPES:
            raise _BadState(f"unexpected array dtype {dtype!r}")
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in data):
            raise _BadState("unexpected array content")
        return np.asarray(data, dtype=dtype).reshape([int(n) for n in shape])
    if tag == "float" and value["value"] in ("nan", "inf", "-inf"):
        return float(value["value"])
    raise _BadState(f"unexpected value {str(value)[:60]}")


def _write_training_state(directory: Path, training_state: Mapping[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(dict(training_state), (), tensors)
    directory.mkdir()
    save_file(tensors, str(directory / TRAINING_TENSORS), metadata={"format": _FORMAT})
    (directory / TRAINING_JSON).write_text(
        json.dumps({"format": _FORMAT, "state": encoded}, allow_nan=False))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text[:200] + " ...") if len(text) > 200 else text or type(err).__name__


def _read_training_state(directory: Path) -> dict[str, Any]:
    """The training state from safetensors + JSON only (no pickle); a missing, corrupt or
    unexpected file raises a one-line SepoError naming it."""
    from safetensors import safe_open

    tensors_file, json_file = directory / TRAINING_TENSORS, directory / TRAINING_JSON
    for f in (tensors_file, json_file):
        if not f.is_file():
            raise SepoError(f"{f} is missing: the checkpoint is incomplete")
    try:
        with safe_open(str(tensors_file), framework="pt", device="cpu") as fh:
            if (fh.metadata() or {}).get("format") != _FORMAT:
                raise _BadState(f"not a {_FORMAT} file")
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types on a corrupt file
        raise SepoError(f"{tensors_file} is not a valid training state file "
                        f"({_one_line(err)})") from None
    try:
        document = json.loads(json_file.read_bytes().decode("utf-8"))
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            raise _BadState(f"not a {_FORMAT} file")
        used: set[str] = set()
        state = _decode(document["state"], tensors, used)
        if not isinstance(state, dict):
            raise _BadState("the state is not an object")
    # RecursionError: absurdly nested JSON; OverflowError: an array value out of its dtype.
    except (ValueError, KeyError, TypeError, RecursionError, OverflowError) as err:
        raise SepoError(f"{json_file} is not a valid training state file "
                        f"({_one_line(err)})") from None
    if used != set(tensors):
        raise SepoError(f"{tensors_file} holds tensors that {json_file.name} does not name "
                        f"({sorted(set(tensors) - used)[:3]})")
    return state


# ------------------------------------------------------------------ atomic directories
#: The names of a checkpoint's staging and set-aside directories (`.tmp-step-000010-<pid>`,
#: `.old-best-<pid>`): `--resume` ignores and removes these, as in older run directories.
ASIDE_NAMES = ".{kind}-{name}-"


def write_dir_atomically(final: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` to fill a temporary directory, then move it to `final` in one rename
    (`sepo.rundir.write_dir_atomically`, fsynced, with the checkpoint names).

    A previous `final` (re-saving the same step, or `best/`) is first moved aside and deleted
    after the swap, so a reader never sees a half-written directory. What a kill left of an
    earlier write is removed first: a `.tmp-` directory is unfinished; an `.old-` one was
    being replaced (killed mid-swap, the trainer rewrites best/ from its checkpoint).
    """
    return rundir.write_dir_atomically(final, write, names=ASIDE_NAMES)


def write_text_atomically(path: Path, text: str) -> None:
    """Replace a small file in one durable rename, so a kill leaves the old or the new content,
    never a truncated file (e.g. config.json, which `--resume` must read)."""
    rundir.write_text_atomically(path, text, fsync=True)


def save_checkpoint(run_dir: Path, step: int, *, model: Any, tokenizer: Any,
                    training_state: Mapping[str, Any], trainer_state: TrainerState,
                    metrics: str, agent_settings: Mapping[str, Any] | None = None) -> Path:
    """Write `checkpoints/step-XXXXXX/` atomically: weights (save_pretrained: the full model,
    or only the LoRA adapter), tokenizer, the agent settings (`sepo_agent.json`: how the model
    answers, read by `load_lm_agent`), `training/` (optimizer, scheduler, RNG states as
    safetensors + JSON, and `metrics`, the text of metrics.csv up to this step) and
    `trainer_state.json` (written last: its presence marks the checkpoint complete)."""
    from sepo.agents.lm import write_agent_settings

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if agent_settings is not None:
            write_agent_settings(tmp, **agent_settings)
        _write_training_state(tmp / TRAINING_DIR, training_state)
        (tmp / TRAINING_DIR / METRICS_COPY).write_text(metrics, newline="")
        (tmp / TRAINER_STATE).write_text(trainer_state.to_json())

    return write_dir_atomically(Path(run_dir) / CHECKPOINTS / step_dir_name(step), write)


def check_checkpoint(checkpoint: Path) -> TrainerState:
    """The trainer state of a checkpoint that `--resume` can load; a one-line SepoError naming
    the file otherwise. Reads only JSON and file names: cheap enough to check before loading
    a model, and never unpickles anything."""
    checkpoint = Path(checkpoint)
    legacy = checkpoint / LEGACY_TRAINING_STATE
    if legacy.exists():
        raise SepoError(
            f"{legacy} is a checkpoint in an old, unsafe format (a pickle, which can run code "
            "when loaded) that sepo no longer loads; retrain, or start a new run from its "
            f"weights with --model {checkpoint}")
    state_file = checkpoint / TRAINER_STATE
    if not state_file.is_file():
        raise SepoError(f"{checkpoint} is not a complete SEPO checkpoint (no {TRAINER_STATE})")
    for name in (TRAINING_TENSORS, TRAINING_JSON, METRICS_COPY):
        if not (checkpoint / TRAINING_DIR / name).is_file():
            raise SepoError(f"{checkpoint / TRAINING_DIR / name} is missing: the checkpoint "
                            "is incomplete")
    try:
        state = TrainerState.from_json(state_file.read_bytes().decode("utf-8"))
        _check_trainer_state(state)
    except (ValueError, TypeError, RecursionError) as err:
        raise SepoError(f"{state_file} is not a valid trainer state ({_one_line(err)})") from None
    return state


def _check_trainer_state(state: TrainerState) -> None:
    def is_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    def is_number(x: Any) -> bool:
        return is_int(x) or isinstance(x, float)

    if not is_int(state.step) or state.step < 0:
        raise _BadState(f"step {state.step!r}")
    if not (state.best_step is None or is_int(state.best_step)):
        raise _BadState(f"best_step {state.best_step!r}")
    if not (state.best_safety is None or is_number(state.best_safety)):
        raise _BadState(f"best_safety {state.best_safety!r}")
    if not isinstance(state.last_eval, dict) or not all(
            isinstance(k, str) and (v is None or is_number(v))
            for k, v in state.last_eval.items()):
        raise _BadState("last_eval is not a map of names to numbers")
    if not isinstance(state.budgets, dict):
        raise _BadState("budgets is not a map")
    if not isinstance(state.oracle, dict):
        raise _BadState("oracle is not a map")


def load_training_state(checkpoint: Path) -> tuple[dict[str, Any], TrainerState]:
    """(training state, trainer state) of a checkpoint, from safetensors and JSON only."""
    state = check_checkpoint(checkpoint)
    return _read_training_state(Path(checkpoint) / TRAINING_DIR), state


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep=0: keep all)."""
    root = Path(run_dir) / CHECKPOINTS
    for stale in root.glob(".trash-*"):  # left by a kill during an earlier prune
        shutil.rmtree(stale, ignore_errors=True)
    if keep <= 0:
        return
    for _, path in list_checkpoints(run_dir)[:-keep]:
        # Renamed out of the `step-*` names first, in one step: a kill mid-delete never leaves
        # a half-deleted directory that still looks like a checkpoint.
        trash = root / f".trash-{path.name}-{os.getpid()}"
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)


def save_best(run_dir: Path, checkpoint: Path, evaluation: Mapping[str, Any]) -> Path:
    """Copy a checkpoint's model and tokenizer (not its training state) to `best/`, atomically,
    with the evaluation that made it the best."""

    def write(tmp: Path) -> None:
        for item in Path(checkpoint).iterdir():
            if item.name in (TRAINING_DIR, LEGACY_TRAINING_STATE):
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

    The rows are also kept in memory, so that each checkpoint can carry the rows up to its
    step (`text`). On resume, metrics.csv is rebuilt from the checkpoint's copy: rows after its
    step (written before a crash, or torn by it) are dropped, so the file of a resumed run
    equals that of an uninterrupted one, and no row of a checkpointed step is ever lost.
    """

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.rows: list[list[str]] = []

    def start(self, resume_step: int | None, committed: Path | None = None) -> None:
        """Write the header (a fresh run) or the rows up to `resume_step` (`load`)."""
        self.load(resume_step, committed)
        self.rewrite()

    def load(self, resume_step: int | None, committed: Path | None = None) -> None:
        """Keep no rows (a fresh run) or the rows up to `resume_step`, read from `committed`
        (the checkpoint's copy of metrics.csv) or else from metrics.csv itself. Writes
        nothing, so every process of a multi-GPU run can check the file."""
        if resume_step is None or (committed is None and not self.path.exists()):
            self.rows = []
        else:  # a missing checkpoint copy is an error (`_read`), not an empty history
            self.rows = self._read(committed if committed is not None else self.path,
                                   resume_step)

    def rewrite(self) -> None:
        """Write metrics.csv: the header and the rows kept so far. Replaced in one rename: a
        kill mid-rewrite leaves the old file, still rebuildable from the checkpoint."""
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows([self.columns, *self.rows])
        os.replace(tmp, self.path)

    def _read(self, source: Path, resume_step: int) -> list[list[str]]:
        try:
            with open(source, newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise SepoError(f"{source} cannot be read ({_one_line(err)}); cannot resume") from None
        if not rows or rows[0][:1] != self.columns[:1] or not set(rows[0]) <= set(self.columns):
            raise SepoError(f"{source} does not have the expected columns; cannot resume")
        # A run started by an older sepo may lack newer columns: they stay empty for its rows.
        at = {name: i for i, name in enumerate(rows[0])}
        try:
            return [[r[at[c]] if c in at else "" for c in self.columns]
                    for r in rows[1:] if r and int(r[0]) <= resume_step]
        except (ValueError, IndexError):
            raise SepoError(f"{source} has a malformed row; cannot resume") from None

    def _cells(self, row: Mapping[str, Any]) -> list[str]:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"metrics row has unknown columns {sorted(unknown)}")
        return [_cell(row.get(c)) for c in self.columns]

    def text(self, row: Mapping[str, Any] | None = None) -> str:
        """The CSV text of the rows so far, plus `row` if given: what a checkpoint stores."""
        out = io.StringIO()
        csv.writer(out).writerows([self.columns, *self.rows,
                                   *([self._cells(row)] if row is not None else [])])
        return out.getvalue()

    def append(self, row: Mapping[str, Any]) -> None:
        cells = self._cells(row)
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow(cells)
        self.rows.append(cells)


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv as dicts of strings."""
    with open(Path(run_dir) / METRICS, newline="") as fh:
        return list(csv.DictReader(fh))
