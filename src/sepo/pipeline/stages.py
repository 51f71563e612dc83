"""The stages of `sepo run` and their orchestration: base model → SFT data → SFT → SEPO and
reward-only → evaluation of every condition → results and report, for each game and seed.

Each stage skips itself when its output is finished (`sepo.pipeline.layout`) and writes
atomically or behind a completion marker, so an interrupted run restarts where it stopped; a
SEPO run resumes from its last checkpoint. Heavy imports (torch, the trainers) happen inside
the stages.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from sepo.console import new_progress
from sepo.games import get_game
from sepo.games.base import derive_seed
from sepo.pipeline.config import RunConfig
from sepo.pipeline.layout import (
    CONFIG_FILE,
    check_run_dir,
    eval_path,
    forget_unstarted_run,
    record_run,
    seed_dir,
    sft_data_done,
    sft_done,
    trained_checkpoint,
    training_state,
)
from sepo.pipeline.results import write_results
from sepo.report import (
    build_report,
    condition_sort_key,
    load_results,
    rich_table,
    write_json_atomic,
)
from sepo.rundir import RunLock, check_output_dir, empty_directory, model_input_paths

#: First part of the final evaluation's seed indices and of the evaluated agents' sampling
#: seeds ("SEPO FINAL"). The trainers pick their best checkpoint on evaluation seed index 0;
#: the final evaluation uses indices from `FINAL_EVAL_INDEX` on, so selection and measurement
#: never share an episode.
FINAL_EVAL_INDEX = 1_000_000
_AGENT_TAG = 0x5E90_F1A1


# ====================================================================== console output
class _Log:
    """Stage lines on the console (rich), with elapsed times; silent when quiet."""

    def __init__(self, quiet: bool) -> None:
        self.console = Console(quiet=quiet, highlight=False)
        if not self.console.is_terminal:  # a log file: no need to wrap at 80 columns
            self.console = Console(quiet=quiet, highlight=False, width=200)
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, key: str, what: str) -> Iterator[None]:
        self.console.print(f"[bold cyan]▶[/] {what}")
        t0 = time.perf_counter()
        yield
        elapsed = time.perf_counter() - t0
        self.timings[key] = self.timings.get(key, 0.0) + elapsed
        self.console.print(f"  [green]✓[/] {what} [dim]({_duration(elapsed)})[/]")

    def skip(self, what: str) -> None:
        self.console.print(f"[dim]• {what}: done already, skipped[/]")


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


# ====================================================================== stages
def _stage_base(config: RunConfig, log: _Log) -> str:
    """Make sure the base model is there (`tiny` ships in the package; `smollm2-135m` is
    converted and cached on first use) before the first stage that needs it."""
    from sepo.models import resolve

    with log.stage("base", f"base model: {config.model}"):
        path = resolve(config.model, progress=log.console.is_terminal)
    if path != config.model:
        log.console.print(f"  {path}")
    return config.model


def _stage_sft_data(config: RunConfig, game: str, seed: int, log: _Log) -> Path:
    from sepo.sft.data import generate_sft_data

    out = seed_dir(config.out, game, seed) / "sft-data"
    if sft_data_done(out):
        log.skip(f"{game} seed {seed}: SFT data")
        return out
    if out.exists():
        shutil.rmtree(out)
    b = config.budget(game)
    with log.stage(f"{game}/{seed}/sft-data", f"{game} seed {seed}: SFT data "
                   f"({b.sft_episodes} episodes per opponent)"):
        generate_sft_data(game, out, episodes_per_opponent=b.sft_episodes,
                          reasoning=b.reasoning, seed=seed)
    return out


def _stage_sft(config: RunConfig, game: str, seed: int, base: str, data: Path,
               log: _Log) -> Path:
    from sepo.sft.train import SFTRunConfig, train_sft

    out = seed_dir(config.out, game, seed) / "sft"
    if sft_done(out):
        log.skip(f"{game} seed {seed}: SFT")
        return out
    if out.exists():
        shutil.rmtree(out)
    b = config.budget(game)
    sft_config = SFTRunConfig(**config.sft_settings(game, seed, progress=log.console.is_terminal),
                              **config.sft)
    with log.stage(f"{game}/{seed}/sft", f"{game} seed {seed}: SFT ({b.sft_epochs:g} epochs)"):
        result = train_sft(game, base, data, out, sft_config)
    log.console.print(f"  eval loss {result.eval_loss_initial:.3f} → "
                      f"{result.eval_loss_final:.3f}")
    return out


def _stage_train(config: RunConfig, game: str, seed: int, sft: Path, condition: str,
                 log: _Log) -> Path:
    from sepo.train import train_sepo

    out = seed_dir(config.out, game, seed) / condition
    sepo_config = config.sepo_config(game, seed, sft, out, condition)
    done, last = training_state(out)
    if done >= sepo_config.steps:
        log.skip(f"{game} seed {seed}: {condition} ({done} steps)")
        return out
    if last is not None:
        sepo_config.resume = True
        what = f"{game} seed {seed}: {condition}, resumed at step {done}/{sepo_config.steps}"
    else:
        if out.exists():  # interrupted before its first checkpoint: nothing to keep
            shutil.rmtree(out)
        what = f"{game} seed {seed}: {condition} ({sepo_config.steps} steps)"
    with log.stage(f"{game}/{seed}/{condition}", what):
        result = train_sepo(sepo_config, progress=log.console.is_terminal)
    if result.best_step is not None:
        log.console.print(f"  best checkpoint: step {result.best_step}, in-training Safety "
                          f"{result.best_safety:.3f}")
    else:
        log.console.print(f"  no checkpoint eligible as best "
                          f"({sepo_config.best_checkpoint_rule()}): the final one is evaluated")
    return out


def _agent(config: RunConfig, game: str, seed: int, model: str | Path) -> Any:
    from sepo.agents import load_lm_agent
    from sepo.models.util import resolve_device

    b = config.budget(game)
    device = resolve_device(config.device)
    return load_lm_agent(str(model), temperature=config.temperature, reasoning=b.reasoning,
                         max_new_tokens=config.new_tokens(game),
                         seed=derive_seed(_AGENT_TAG, seed), device=device)


def _stage_eval(config: RunConfig, game: str, seed: int, condition: str, model: str | Path,
                log: _Log) -> dict[str, Any]:
    """Evaluate one condition and write `eval/<condition>.json` atomically."""
    from sepo.evaluation import evaluate, read_tabular_policy

    path = eval_path(config.out, game, seed, condition)
    if path.exists():
        log.skip(f"{game} seed {seed}: evaluation of {condition}")
        return json.loads(path.read_text())
    b = config.budget(game)
    with log.stage(f"{game}/{seed}/eval", f"{game} seed {seed}: evaluation of {condition} "
                   f"({b.eval_episodes} episodes per opponent)"), _progress(log) as update:
        agent = _agent(config, game, seed, model)
        report = evaluate(game, agent, episodes=b.eval_episodes, seeds=config.eval_seeds,
                          n_boot=config.n_boot, seed=FINAL_EVAL_INDEX + seed * config.eval_seeds,
                          progress=update)
        # Games with exact solutions (Kuhn): the agent's table, for the report's policy figure.
        policy = read_tabular_policy(get_game(game), agent)
    entry = {
        "game": game, "seed": seed, "condition": condition,
        "checkpoint": _relative_or_name(model, config.out),
        "report": report.to_dict(),
        "kuhn_policy": dict(policy) if policy is not None else None,
    }
    write_json_atomic(path, entry)
    del agent
    return entry


@contextmanager
def _progress(log: _Log) -> Iterator[Callable[[int, int], None]]:
    with new_progress("bar", "count", "elapsed", console=log.console, transient=True) as bar:
        task = bar.add_task("rounds", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _relative_or_name(model: str | Path, out: Path) -> str:
    path = Path(model)
    if path.exists():
        try:
            return str(path.resolve().relative_to(out.resolve()))
        except ValueError:
            return str(path.resolve())
    return str(model)


# ====================================================================== the pipeline
def run_pipeline(config: RunConfig, *, quiet: bool = False, overwrite: bool = False) -> Path:
    """Run every stage of every game and seed (skipping finished ones) and build the report.

    Returns the run directory. `results.json` holds every evaluation found in the directory
    (also seeds from earlier invocations), so the report covers all of them. The run holds
    `RunLock(out, "run")` throughout: a second run in the same directory stops at once.
    `overwrite` deletes a run with another config (or files sepo did not write) in `out`
    before starting, once the base model is there; a run with this config is continued.
    """
    # Refused here before anything is created; checked again under the lock.
    check_output_dir(config.out, inputs=model_input_paths(config.model), overwrite=overwrite,
                     made_by="run")
    with RunLock(config.out, "run"):
        record, start_over = check_run_dir(config, overwrite=overwrite)
        recorded = (config.out / CONFIG_FILE).exists() and not start_over
        try:
            return _run_stages(config, record, start_over=start_over, quiet=quiet)
        except BaseException:
            if not recorded:
                forget_unstarted_run(config.out)
            raise


def _run_stages(config: RunConfig, record: RunConfig, *, start_over: bool,
                quiet: bool) -> Path:
    """`run_pipeline` once the directory is checked and locked."""
    log = _Log(quiet)
    started = time.perf_counter()
    log.console.print(f"[bold]sepo run[/] {', '.join(config.games)} · model {config.model} · "
                      f"seeds {', '.join(map(str, config.seed_list))} · {config.out}")
    from sepo.models.util import transformers_progress

    # The stage lines say what is loading; transformers' per-load bars would only be noise.
    with transformers_progress(False):
        base = _stage_base(config, log)
        if start_over:
            empty_directory(config.out)
        record_run(config, record)
        for game in config.games:
            for seed in config.seed_list:
                data = _stage_sft_data(config, game, seed, log)
                sft = _stage_sft(config, game, seed, base, data, log)
                trained = {c: _stage_train(config, game, seed, sft, c, log)
                           for c in config.trained_conditions}
                models: dict[str, str | Path] = {
                    "base": base, "sft": sft,
                    **{c: trained_checkpoint(d, config.select) for c, d in trained.items()},
                }
                for condition in sorted(models, key=condition_sort_key):
                    _stage_eval(config, game, seed, condition, models[condition], log)

    log.timings["total_s"] = time.perf_counter() - started
    write_results(config, log.timings)
    with log.stage("report", "report: tables and plots"):
        report = build_report([config.out])
    results = load_results(config.out)
    for game in config.games:
        log.console.print(rich_table(results["aggregates"], game, width=log.console.width))
    log.console.print(f"[bold]report:[/] {report}  ·  total {_duration(log.timings['total_s'])}")
    return config.out


__all__ = ["FINAL_EVAL_INDEX", "run_pipeline"]
