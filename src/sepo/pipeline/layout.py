"""The run directory of `sepo run`: where each stage's output lives, what is finished, and whose
directory it is.

`RUN_DIR/<game>/seed<k>/` holds `sft-data/`, `sft/`, `sepo/`, `reward-only/` and
`eval/<condition>.json`; `RUN_DIR/run_config.json` records the run and `timings.json` every
invocation's stage times. A finished stage is recognised by its completion marker (or, for a
trainer, its checkpoints), so a rerun skips it and resumes the rest. One directory holds one
experiment: `check_run_dir` refuses another config there, and a run that fails before any
stage saved work leaves no record behind (`forget_unstarted_run`).
"""

from __future__ import annotations

from pathlib import Path

from sepo.errors import SepoError
from sepo.pipeline.config import RunConfig, Selection
from sepo.report import write_json_atomic
from sepo.rundir import (
    LOCK_FILE,
    OUTPUT_MARKER,
    check_output_dir,
    model_input_paths,
    write_output_marker,
)

CONFIG_FILE = "run_config.json"
TIMINGS_FILE = "timings.json"
#: What a run directory holds before any stage has saved work.
_BOOKKEEPING = frozenset({CONFIG_FILE, OUTPUT_MARKER, LOCK_FILE, TIMINGS_FILE})


# ====================================================================== where things live
def seed_dir(out: Path, game: str, seed: int) -> Path:
    return out / game / f"seed{seed}"


def eval_path(out: Path, game: str, seed: int, condition: str) -> Path:
    return seed_dir(out, game, seed) / "eval" / f"{condition}.json"


# ====================================================================== what is finished
def sft_done(path: Path) -> bool:
    from sepo.sft.train import SFT_INFO_FILE

    return (path / SFT_INFO_FILE).exists()


def sft_data_done(path: Path) -> bool:
    return (path / "card.json").exists()


def training_state(run_dir: Path) -> tuple[int, Path | None]:
    """(steps done, latest checkpoint) of a SEPO run directory, (0, None) when there is none."""
    from sepo.train import checkpoint as ckpt

    last = ckpt.latest_checkpoint(run_dir)
    if last is None:
        return 0, None
    state = ckpt.TrainerState.from_json((last / ckpt.TRAINER_STATE).read_text())
    return state.step, last


def trained_checkpoint(run_dir: Path, select: Selection) -> Path:
    """The checkpoint of a finished SEPO run that the pipeline evaluates."""
    from sepo.train import checkpoint as ckpt

    if select == "best":
        best = run_dir / ckpt.BEST
        if best.exists():
            return best
        # No checkpoint ever had a finite Safety: fall back to the final one, and say so in
        # results.json (`checkpoint` names what was evaluated).
    _, last = training_state(run_dir)
    if last is None:
        raise SepoError(f"{run_dir} holds no checkpoint")
    return last


# ====================================================================== whose directory
def check_run_dir(config: RunConfig, *, overwrite: bool) -> tuple[RunConfig, bool]:
    """Refuse to mix two different experiments in one directory (or to write into files sepo
    did not write). Returns the config to record (this one, with the union of the seeds ever
    run here) and whether the directory must be emptied first: `overwrite` over another
    config or foreign files. Writes nothing; `record_run` does once the run has started."""
    state = check_output_dir(config.out, inputs=model_input_paths(config.model),
                             overwrite=overwrite, made_by="run")
    path = config.out / CONFIG_FILE
    if state == "replace":
        return config, True
    if state != "earlier" or not path.exists():
        return config, False
    try:
        saved = RunConfig.model_validate_json(path.read_text())
    except (ValueError, SepoError, OSError) as err:
        problem = f"a run config this version cannot read ({' '.join(str(err).split())[:200]})"
    else:
        mine, theirs = config.comparable(), saved.comparable()
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        # A condition both runs name must be the same condition; new ones may be added.
        diff += sorted(f"conditions.{name}" for name, fields in config.conditions.items()
                       if name in saved.conditions and saved.conditions[name] != fields)
        if not diff:
            # Keep the union of the seeds and of the conditions ever run here.
            lo = min(saved.first_seed, config.first_seed)
            hi = max(saved.first_seed + saved.seeds, config.first_seed + config.seeds)
            return config.model_copy(update={
                "first_seed": lo, "seeds": hi - lo,
                "conditions": {**saved.conditions, **config.conditions}}), False
        changes = ", ".join(f"{k}: {_setting(theirs, saved, k)!r} → {_setting(mine, config, k)!r}"
                            for k in diff)
        problem = f"a run with another config ({changes})"
    if overwrite:
        return config, True
    raise SepoError(f"{config.out} holds {problem}; choose another --out, or add --overwrite "
                    "to delete that run and start this one (only --seeds/--first-seed may "
                    "change to continue it, and conditions may be added)")


def _setting(comparable: dict, config: RunConfig, key: str) -> object:
    """A differing setting's value, for the error: a field, or `conditions.<name>`."""
    if key.startswith("conditions."):
        return config.conditions[key.removeprefix("conditions.")]
    return comparable.get(key)


def record_run(config: RunConfig, record: RunConfig) -> None:
    """Mark the directory as this run's. Done once the base model is there, so that a run
    that fails before it starts (an unknown model) leaves no config refusing the corrected
    command."""
    write_output_marker(config.out, "run")
    write_json_atomic(config.out / CONFIG_FILE, record.model_dump(mode="json"))


def forget_unstarted_run(out: Path) -> None:
    """After a failure of an invocation that recorded the run itself: if no stage saved
    anything, remove the record (the RunLock then removes the directory if it made it), for
    the same reason as `record_run`'s timing."""
    if not out.is_dir() or any(p.name not in _BOOKKEEPING for p in out.iterdir()):
        return
    for name in (CONFIG_FILE, OUTPUT_MARKER):
        (out / name).unlink(missing_ok=True)


__all__ = [
    "CONFIG_FILE",
    "TIMINGS_FILE",
    "check_run_dir",
    "eval_path",
    "forget_unstarted_run",
    "record_run",
    "seed_dir",
    "sft_data_done",
    "sft_done",
    "trained_checkpoint",
    "training_state",
]
