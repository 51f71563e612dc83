"""Checkpoints that are safe to resume: no pickle is ever loaded, a kill at any point of a
checkpoint loses no step and no metrics row, and one run directory has one trainer at a time."""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from safetensors.torch import load_file

from sepo.errors import SepoError
from sepo.games import get_game
from sepo.rundir import RunLock
from sepo.train import checkpoint as ckpt
from sepo.train import sepo as trainer
from sepo.train.config import SEPOConfig


# ------------------------------------------------------------------ helpers
def _small_kuhn_pools(mp: pytest.MonkeyPatch) -> None:
    """One opponent per pool: a step takes a fraction of a second."""
    kuhn = get_game("kuhn")
    mp.setitem(kuhn.pools, "train", ["Nash"])
    mp.setitem(kuhn.pools, "exploit", ["AlwaysBet"])


@pytest.fixture()
def small_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    _small_kuhn_pools(monkeypatch)


def _instant_eval(mp: pytest.MonkeyPatch,
                  figures: Callable[[int], tuple[float, float]]) -> None:
    """The in-training evaluation replaced by an instant one: `figures(step)` gives its
    (Safety, parse-failure rate); every other metric is 0."""
    real_checkpoint = trainer._checkpoint
    current = {"step": 0}

    def checkpoint(run_dir: Path, game: Any, policy: Any, config: SEPOConfig,
                   state: ckpt.TrainerState, *args: Any) -> Path:
        current["step"] = state.step
        return real_checkpoint(run_dir, game, policy, config, state, *args)

    def evaluate(game: Any, policy: Any, config: SEPOConfig) -> dict[str, float | None]:
        safety, failures = figures(current["step"])
        return {"eval_safety": safety, "eval_exploit": 0.0, "eval_pay_per_round": 0.0,
                "eval_collusion": 0.0, "eval_externality": 0.0,
                "eval_exact_exploitability": 0.0, "eval_parse_failure_rate": failures}

    mp.setattr(trainer, "_checkpoint", checkpoint)
    mp.setattr(trainer, "evaluate_checkpoint", evaluate)


def _cheap_eval(mp: pytest.MonkeyPatch) -> None:
    """An instant evaluation whose Safety is the step, so every checkpoint is the best so far
    and also rewrites best/ (its writes are part of the kill test)."""
    _instant_eval(mp, lambda step: (float(step), 0.0))


@pytest.fixture()
def cheap_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    _cheap_eval(monkeypatch)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The test model is tiny: one thread is as fast, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def kuhn_config(model_path: Path, out: Path, **overrides: Any) -> SEPOConfig:
    """The smallest run of tests/test_train.py: checkpoint (and evaluate) every step, keep one
    checkpoint (so every save also prunes). Seed 1: the test model (which rarely writes a
    parseable answer) has trainable decisions in both steps, so both change the weights."""
    fields: dict[str, Any] = dict(
        game="kuhn", model=str(model_path), out=out, steps=1, group_size=2, checkpoint_every=1,
        keep_checkpoints=1, eval_episodes=1, eval_bootstrap=10, max_new_tokens=6,
        reasoning=False, device="cpu", lr=1e-3, temperature=1.0, seed=1)
    fields.update(overrides)
    return SEPOConfig(**fields)


def resume(config: SEPOConfig, steps: int) -> trainer.RunResult:
    return trainer.train_sepo(config.model_copy(update={"steps": steps, "resume": True}),
                              progress=False)


def rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv without its timing columns (the only ones a rerun may change)."""
    return [{k: v for k, v in row.items() if k not in trainer.TIMING_COLUMNS}
            for row in ckpt.read_metrics(run_dir)]


def final_weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run_dir / ckpt.CHECKPOINTS / ckpt.step_dir_name(step) / "model.safetensors")


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (relative path: content)."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def one_step_run(tiny_lm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-step Kuhn run (checkpoint at step 1): the template the tests copy."""
    out = tmp_path_factory.mktemp("template") / "run"
    with pytest.MonkeyPatch.context() as mp:
        _small_kuhn_pools(mp)
        _cheap_eval(mp)
        trainer.train_sepo(kuhn_config(tiny_lm_path, out), progress=False)
    return out


def copy_run(template: Path, to: Path) -> Path:
    shutil.copytree(template, to)
    return to


# ------------------------------------------------------------------ (a) no pickle is loaded
class _Payload:
    """Unpickling this runs `exec`, which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def malicious_pickle(marker: Path) -> bytes:
    payload = pickle.dumps({"optimizer": _Payload(marker)})
    # The payload does run code when unpickled, so its absence below means something.
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()
    return payload


def _plant_legacy_beside(step: Path, payload: bytes) -> None:
    (step / ckpt.LEGACY_TRAINING_STATE).write_bytes(payload)


def _plant_legacy_only(step: Path, payload: bytes) -> None:
    """A checkpoint as older sepo versions wrote it: training.pt, no training/."""
    shutil.rmtree(step / ckpt.TRAINING_DIR)
    (step / ckpt.LEGACY_TRAINING_STATE).write_bytes(payload)


def _replace(name: str) -> Callable[[Path, bytes], None]:
    def plant(step: Path, payload: bytes) -> None:
        (step / name).write_bytes(payload)

    return plant


def _garbage(name: str) -> Callable[[Path, bytes], None]:
    def plant(step: Path, payload: bytes) -> None:
        (step / name).write_bytes(b"\x00\xffnot a sepo file" * 10)

    return plant


def _unknown_tag(step: Path, payload: bytes) -> None:
    """Valid JSON in the right format, asking for a type the loader does not build."""
    path = step / ckpt.TRAINING_DIR / ckpt.TRAINING_JSON
    document = json.loads(path.read_text())
    document["state"]["agent_calls"] = {"__sepo__": "pickle", "data": payload.hex()}
    path.write_text(json.dumps(document))


def _missing(name: str) -> Callable[[Path, bytes], None]:
    def plant(step: Path, payload: bytes) -> None:
        (step / name).unlink()

    return plant


TENSORS = f"{ckpt.TRAINING_DIR}/{ckpt.TRAINING_TENSORS}"
STATE = f"{ckpt.TRAINING_DIR}/{ckpt.TRAINING_JSON}"
METRICS = f"{ckpt.TRAINING_DIR}/{ckpt.METRICS_COPY}"
PLANTS: dict[str, tuple[Callable[[Path, bytes], None], str]] = {
    "training.pt beside the new files": (_plant_legacy_beside, r"training\.pt is a checkpoint "
                                         r"in an old, unsafe format.*--model"),
    "old-format checkpoint": (_plant_legacy_only, r"training\.pt is a checkpoint in an old, "
                              r"unsafe format.*retrain.*--model"),
    "pickle as tensors.safetensors": (_replace(TENSORS), r"tensors\.safetensors is not a valid"),
    "pickle as state.json": (_replace(STATE), r"state\.json is not a valid"),
    "pickle as trainer_state.json": (_replace(ckpt.TRAINER_STATE),
                                     r"trainer_state\.json is not a valid"),
    "pickle as metrics.csv": (_replace(METRICS), r"training/metrics\.csv"),
    "pickle as model.safetensors": (_replace("model.safetensors"),
                                    r"model\.safetensors is not a valid"),
    "garbage tensors.safetensors": (_garbage(TENSORS), r"tensors\.safetensors is not a valid"),
    "garbage state.json": (_garbage(STATE), r"state\.json is not a valid"),
    "unknown type in state.json": (_unknown_tag, r"state\.json is not a valid.*unexpected"),
    "missing state.json": (_missing(STATE), r"state\.json is missing"),
    "missing metrics copy": (_missing(METRICS), r"training/metrics\.csv is missing"),
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_resume_never_unpickles_and_refuses_bad_checkpoint_files(
        plant: str, one_step_run: Path, tiny_lm_path: Path, tmp_path: Path,
        small_pools: None) -> None:
    marker = tmp_path / "pwned"
    payload = malicious_pickle(marker)
    run = copy_run(one_step_run, tmp_path / "run")
    step = run / ckpt.CHECKPOINTS / ckpt.step_dir_name(1)
    write, message = PLANTS[plant]
    write(step, payload)
    # Every file but a planted model.safetensors is read before the run writes anything.
    before = snapshot(run)
    with pytest.raises(SepoError, match=message) as raised:
        resume(kuhn_config(tiny_lm_path, run), steps=2)
    assert not marker.exists()
    assert "\n" not in str(raised.value)
    if plant != "pickle as model.safetensors":
        assert snapshot(run) == before
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [1]


def test_the_loader_reads_no_pickle_at_all(one_step_run: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Resuming reads the training state with pickle (and torch.load) unavailable."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a checkpoint was unpickled")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"),
                         (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    training, state = ckpt.load_training_state(
        one_step_run / ckpt.CHECKPOINTS / ckpt.step_dir_name(1))
    assert state.step == 1 and training["agent_calls"] > 0
    assert set(training) == {"optimizer", "scheduler", "rng", "agent_calls"}
    assert isinstance(training["rng"]["python"], tuple)  # random.setstate needs tuples


# ------------------------------------------------------------------ (b) kill at every point
class KillPoints:
    """Records what a kill -9 would leave at every operation that changes the run directory
    (a file opened for writing, safetensors written, fsync, rename, tree deletion): just
    before the operation runs, the run directory is copied, with what the interrupted
    operation may already have done (a file truncated by "w", half a CSV row appended, one
    file of a tree deleted). The run itself goes on, so one run yields every kill point; a
    copy is exactly the disk a killed process leaves (no exception handler or `finally`
    runs after a kill -9, and nothing here assumes one does)."""

    def __init__(self, run_dir: Path, store: Path) -> None:
        self.run_dir, self.store = run_dir.resolve(), store
        self.points: list[tuple[str, Path]] = []

    def _inside(self, path: Any) -> Path | None:
        """`path` relative to the run directory, None outside it (or a file descriptor)."""
        try:
            where = Path(os.fspath(path)).resolve()
        except TypeError:
            return None
        if not where.is_relative_to(self.run_dir):
            return None
        relative = where.relative_to(self.run_dir)
        # TensorBoard's events are not part of the commit protocol, and its writer thread
        # would make the points depend on timing.
        return None if relative.parts[:1] == ("tb",) else relative

    def kill_here(self, what: str, partial: Callable[[Path], None] | None = None) -> None:
        copy = self.store / f"kill-{len(self.points) + 1:03d}"
        shutil.copytree(self.run_dir, copy, ignore=shutil.ignore_patterns("tb"))
        if partial is not None:
            partial(copy)
        self.points.append((what, copy))

    def install(self, mp: pytest.MonkeyPatch) -> None:
        real_open, real_replace, real_rmtree = builtins.open, os.replace, shutil.rmtree
        real_fsync, real_save_file = os.fsync, safetensors.torch.save_file

        def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            relative = self._inside(file) if any(c in mode for c in "wax+") else None
            if relative is not None:
                def partial(copy: Path) -> None:
                    target = copy / relative
                    if "a" in mode and target.exists():
                        with real_open(target, "a") as fh:
                            fh.write("99,torn")
                    elif "w" in mode:
                        target.write_bytes(b"")
                self.kill_here(f"open {mode} {relative}", partial)
            return real_open(file, mode, *args, **kwargs)

        def fake_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            relative = self._inside(dst)
            if relative is not None:
                self.kill_here(f"replace {Path(src).name} -> {relative}")
            real_replace(src, dst, *args, **kwargs)

        def fake_rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
            relative = self._inside(path)
            if relative is not None:
                def partial(copy: Path) -> None:
                    files = sorted(p for p in (copy / relative).rglob("*") if p.is_file())
                    if files:
                        files[0].unlink()
                self.kill_here(f"rmtree {relative}", partial)
            real_rmtree(path, *args, **kwargs)

        def fake_fsync(fd: int) -> None:
            self.kill_here("fsync")
            real_fsync(fd)

        def fake_save_file(tensors: Any, filename: Any, *args: Any, **kwargs: Any) -> None:
            relative = self._inside(filename)
            if relative is not None:
                self.kill_here(f"save_file {relative}",
                               lambda copy: (copy / relative).write_bytes(b"\x00" * 7))
            real_save_file(tensors, filename, *args, **kwargs)

        # pathlib and shutil open files through io.open, the same function as open().
        mp.setattr(builtins, "open", fake_open)
        mp.setattr(io, "open", fake_open)
        mp.setattr(os, "replace", fake_replace)
        mp.setattr(shutil, "rmtree", fake_rmtree)
        mp.setattr(os, "fsync", fake_fsync)
        mp.setattr(safetensors.torch, "save_file", fake_save_file)


def resumable_state(run_dir: Path) -> tuple[tuple[str, bytes], ...]:
    """What `--resume` reads of a run directory: everything but the staging directories
    (`.tmp-*`) of unfinished writes, which it ignores and removes. Two kill points that
    leave the same state resume the same way, so each state is resumed once."""
    return tuple((name, data) for name, data in snapshot(run_dir).items()
                 if not any(part.startswith(".tmp-") for part in Path(name).parts))


@pytest.mark.slow
def test_a_kill_at_any_point_of_a_checkpoint_loses_no_step(
        tiny_lm_path: Path, tmp_path: Path, small_pools: None, cheap_eval: None) -> None:
    """Resume 1 -> 2 steps (rebuilding metrics.csv and config.json, then step 2: its
    checkpoint, best/, pruning step 1, its metrics row), killed at each of its file
    operations; resumed from what the kill left, the run equals an uninterrupted 2-step run:
    the same metrics rows, weights, best/ and checkpoints."""
    steps = 2
    straight = tmp_path / "straight"
    trainer.train_sepo(kuhn_config(tiny_lm_path, straight, steps=steps), progress=False)
    expected_rows, expected_weights = rows(straight), final_weights(straight, steps)
    assert [r["step"] for r in expected_rows] == ["1", "2"]
    expected_best = (straight / ckpt.BEST / ckpt.EVAL).read_bytes()
    assert json.loads(expected_best)["step"] == steps  # step 2 rewrote best/: covered too

    run = tmp_path / "run"
    trainer.train_sepo(kuhn_config(tiny_lm_path, run), progress=False)
    # Both steps trained (else equal weights would prove little): step 2 from step 1's
    # weights, optimizer moments and random states, all restored from the checkpoint.
    start, step1 = load_file(tiny_lm_path / "model.safetensors"), final_weights(run, 1)
    for before, after in ((start, step1), (step1, expected_weights)):
        assert any(not torch.equal(before[k], after[k]) for k in after), "no training"
    kills = KillPoints(run, tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        kills.install(mp)
        resume(kuhn_config(tiny_lm_path, run), steps)
    assert rows(run) == expected_rows
    log = [what for what, _ in kills.points]
    # The points cover the whole commit protocol, in this order.
    for expected in ("replace metrics.csv.tmp -> metrics.csv", "-> config.json",
                     "open w checkpoints/.tmp-step-000002", "save_file checkpoints/.tmp-step-",
                     "-> checkpoints/step-000002", "-> best", "open wb .tmp-best",
                     "rmtree checkpoints/.trash-step-000001", f"open a {ckpt.METRICS}"):
        assert any(expected in what for what in log), (expected, log)
    assert log[-1] == f"open a {ckpt.METRICS}"

    resumed: dict[tuple[tuple[str, bytes], ...], str] = {}
    for at, (what, copy) in enumerate(kills.points, 1):
        state = resumable_state(copy)
        if state in resumed:
            shutil.rmtree(copy)
            continue
        where = f"killed at {at}/{len(kills.points)}: {what}"
        resumed[state] = where
        resume(kuhn_config(tiny_lm_path, copy), steps)
        assert rows(copy) == expected_rows, where
        weights = final_weights(copy, steps)
        assert weights.keys() == expected_weights.keys(), where
        assert all(torch.equal(weights[k], expected_weights[k]) for k in weights), where
        assert (copy / ckpt.BEST / ckpt.EVAL).read_bytes() == expected_best, where
        assert [s for s, _ in ckpt.list_checkpoints(copy)] == [steps], where
        shutil.rmtree(copy)
    assert len(resumed) >= 10, list(resumed.values())


# ------------------------------------------------------------------ (c) one trainer per run
def test_a_locked_run_dir_is_refused_and_left_untouched(
        one_step_run: Path, tiny_lm_path: Path, tmp_path: Path, small_pools: None) -> None:
    run = copy_run(one_step_run, tmp_path / "run")
    with RunLock(run, command="train"):
        held = snapshot(run)
        with pytest.raises(SepoError, match=r"in use by `sepo train` \(pid \d+") as raised:
            resume(kuhn_config(tiny_lm_path, run), steps=2)
        assert "\n" not in str(raised.value)
        assert snapshot(run) == held
    # Released, the same command resumes the run.
    assert resume(kuhn_config(tiny_lm_path, run), steps=2).steps == 2
    assert not (run / ".sepo.lock").exists()


def test_sepo_train_on_a_locked_out_exits_2_and_writes_nothing(
        tiny_lm_path: Path, tmp_path: Path, small_pools: None) -> None:
    from typer.testing import CliRunner

    from sepo.cli import app

    out = tmp_path / "new-run"
    with RunLock(out, command="train"):
        held = snapshot(out)
        result = CliRunner().invoke(app, [
            "train", "kuhn", "--model", str(tiny_lm_path), "--out", str(out), "--steps", "1",
            "--group-size", "2", "--checkpoint-every", "1", "--eval-episodes", "1",
            "--max-new-tokens", "6", "--no-reasoning", "--device", "cpu", "--no-progress"])
        assert result.exit_code == 2, result.output
        assert "in use by `sepo train`" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert snapshot(out) == held


# ------------------------------------------------------------------ a full disk
def test_a_full_disk_at_the_first_checkpoint_is_one_line_and_leaves_nothing(
        tiny_lm_path: Path, tmp_path: Path, small_pools: None, cheap_eval: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # safetensors reports a full disk in its own words, not as an OSError.
    def full(*args: Any, **kwargs: Any) -> None:
        raise safetensors.SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(ckpt, "save_checkpoint", full)
    out = tmp_path / "run"
    with pytest.raises(SepoError, match=r"^no space left on the device of .*run; free some"):
        trainer.train_sepo(kuhn_config(tiny_lm_path, out), progress=False)
    # Nothing to resume was written, so nothing is left: the same command starts cleanly.
    assert not out.exists()

    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(SepoError, match="no space left"):
        trainer.train_sepo(kuhn_config(tiny_lm_path, kept), progress=False)
    assert kept.is_dir()  # a directory that existed is kept


def test_train_refuses_a_directory_of_other_files_and_its_own_model(
        tiny_lm_path: Path, tmp_path: Path, small_pools: None) -> None:
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SepoError, match="not empty and holds files sepo did not write"):
        trainer.train_sepo(kuhn_config(tiny_lm_path, foreign), progress=False)
    assert snapshot(foreign) == {"notes.txt": b"mine"}
    with pytest.raises(SepoError, match="lies inside the input"):
        trainer.train_sepo(kuhn_config(tiny_lm_path, tiny_lm_path / "run"), progress=False)
    assert not (tiny_lm_path / "run").exists()


# ------------------------------------------------------------------ best-checkpoint selection
@pytest.mark.parametrize(("ceiling", "best_step", "best_safety"),
                         [(0.1, 3, 1.0), (1.0, 2, 2.0), (0.01, None, None)])
def test_the_best_checkpoint_is_never_one_whose_answers_did_not_parse(
        tiny_lm_path: Path, tmp_path: Path, small_pools: None, monkeypatch: pytest.MonkeyPatch,
        ceiling: float, best_step: int | None, best_safety: float | None) -> None:
    # Step 2 has the highest Safety, but 60% of its answers fell back: its Safety is the
    # fallback's. Under the default ceiling (0.1) step 3 is the best; with no ceiling step 2;
    # under a ceiling no step meets, there is no best/ and `sepo run` evaluates the last one.
    from sepo.pipeline.layout import trained_checkpoint

    _instant_eval(monkeypatch, {1: (0.5, 0.05), 2: (2.0, 0.6), 3: (1.0, 0.08)}.__getitem__)
    out = tmp_path / "run"
    result = trainer.train_sepo(kuhn_config(tiny_lm_path, out, steps=3, keep_checkpoints=0,
                                            best_max_parse_failures=ceiling), progress=False)
    assert (result.best_step, result.best_safety) == (best_step, best_safety)
    assert [r["eval_parse_failure_rate"] for r in ckpt.read_metrics(out)] == ["0.05", "0.6",
                                                                              "0.08"]
    if best_step is None:
        assert result.best_checkpoint is None and not (out / ckpt.BEST).exists()
        assert trained_checkpoint(out, "best") == out / ckpt.CHECKPOINTS / ckpt.step_dir_name(3)
    else:
        saved = json.loads((out / ckpt.BEST / ckpt.EVAL).read_text())
        assert (saved["step"], saved["eval_safety"]) == (best_step, best_safety)
        assert trained_checkpoint(out, "best") == out / ckpt.BEST


def test_under_a_budget_the_best_checkpoint_is_a_feasible_one(tmp_path: Path) -> None:
    ok = {"eval_safety": 1.0, "eval_exploit": 0.4, "eval_collusion": 0.15,
          "eval_exact_exploitability": 0.14, "eval_parse_failure_rate": 0.02}
    ipd = SEPOConfig(game="ipd", model="x", out=tmp_path, budgets={"collusion": 0.2},
                     advantage="batch")
    assert trainer.eligible_for_best(ok, ipd)
    assert not trainer.eligible_for_best({**ok, "eval_collusion": 0.25}, ipd)
    assert trainer.eligible_for_best({**ok, "eval_collusion": None}, ipd)  # not measured
    assert not trainer.eligible_for_best({**ok, "eval_safety": None}, ipd)
    assert not trainer.eligible_for_best({**ok, "eval_parse_failure_rate": 0.11}, ipd)
    # Without a budget, collusion does not decide; the exact-exploitability budget reads the
    # exact column, not the sampled exploit.
    free = SEPOConfig(game="ipd", model="x", out=tmp_path)
    assert trainer.eligible_for_best({**ok, "eval_collusion": 0.9}, free)
    kuhn = SEPOConfig(game="kuhn", model="x", out=tmp_path, budgets={"exploit": 0.15},
                      budget_exact=True, advantage="batch")
    assert trainer.eligible_for_best(ok, kuhn)
    assert not trainer.eligible_for_best({**ok, "eval_exact_exploitability": 0.16}, kuhn)
    sampled = kuhn.model_copy(update={"budget_exact": False, "budgets": {"exploit": 0.5}})
    assert trainer.eligible_for_best({**ok, "eval_exact_exploitability": 0.9}, sampled)
    assert not trainer.eligible_for_best({**ok, "eval_exploit": 0.6}, sampled)
