"""Data-parallel SEPO equals one process: two gloo processes on the CPU, over the same steps,
train on the same decisions with the same advantages, end with the same weights, log the same
metrics.csv and choose the same best checkpoint as one process (docs/GPU.md).

Each run is spawned (`tests/data_parallel_worker.py`), the one-process run too, so that no run
changes this process's games or accelerate state. Kuhn with one opponent per pool and its
exact-best-response oracle group: 3 groups of 2 rollouts, split 2 + 1 between the processes.
"""

from __future__ import annotations

import csv
import math
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

import data_parallel_worker
from sepo.train.config import SEPOConfig
from sepo.train.sepo import TIMING_COLUMNS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train(config: SEPOConfig, world: int, out: Path) -> list[dict[str, Any]]:
    """Run `config` as `world` processes; each process's record (data_parallel_worker)."""
    out.mkdir(parents=True)
    mp.spawn(data_parallel_worker.run, nprocs=world, join=True,
             args=(world, free_port(), config.model_dump_json(), str(out)))
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def same_number(a: str, b: str) -> bool:
    if a == b:
        return True
    if not a or not b:
        return False
    x, y = float(a), float(b)
    return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-5)


@pytest.mark.parametrize(("advantage", "resumed"), [(None, False), ("group", True)])
def test_two_processes_train_exactly_as_one(tiny_lm_path: Path, tmp_path: Path,
                                            advantage: str | None, resumed: bool) -> None:
    """`resumed`: the two processes train step 1, stop, and resume for step 2."""
    fields: dict[str, Any] = dict(
        game="kuhn", model=str(tiny_lm_path), steps=2, group_size=2, checkpoint_every=1,
        eval_episodes=1, eval_bootstrap=10, max_new_tokens=16, reasoning=False, device="cpu",
        lr=1e-3, temperature=1.0,
        # The test model's answers rarely parse: no parse-failure ceiling, so best/ is chosen.
        best_max_parse_failures=1.0)
    if advantage is not None:  # None: the default setting
        fields["advantage"] = advantage
    one = SEPOConfig(out=tmp_path / "one", **fields)
    two = SEPOConfig(out=tmp_path / "two", **fields)
    (alone,) = train(one, 1, tmp_path / "records-one")
    if resumed:
        first = train(two.model_copy(update={"steps": 1}), 2, tmp_path / "records-first")
        ranks = train(two.model_copy(update={"resume": True}), 2, tmp_path / "records-two")
        for before, after in zip(first, ranks, strict=True):
            after["trained"] = before["trained"] + after["trained"]
    else:
        ranks = train(two, 2, tmp_path / "records-two")
    assert alone["world"] == 1 and [r["world"] for r in ranks] == [2, 2]

    # The same decisions, each with the same advantage, at every step: the processes split
    # the step's groups and together make the one-process batch. (Kuhn's default credits the
    # oracle's group by its expectation, which the main process adds: the process that plays
    # that group may have no sampled decision of its own.)
    assert len(alone["trained"]) == 2
    for step, decisions in enumerate(alone["trained"]):
        shares = [r["trained"][step] for r in ranks]
        assert any(shares) and sum(map(len, shares)) == len(decisions)
        assert sorted(d for share in shares for d in share) == sorted(decisions)

    # The same weights after the optimiser steps: exactly on both ranks (the summed gradients
    # are the same numbers), to float rounding against one process.
    assert torch.equal(ranks[0]["weights"], ranks[1]["weights"])
    assert torch.allclose(ranks[0]["weights"], alone["weights"], rtol=0, atol=1e-5)
    assert not torch.equal(alone["weights"], _starting_weights(tiny_lm_path))

    # metrics.csv: every figure but the timings, the evaluations included.
    rows_one, rows_two = metrics(one.out), metrics(two.out)
    assert [r["step"] for r in rows_two] == ["1", "2"] and len(rows_one) == 2
    differ = {(r1["step"], c) for r1, r2 in zip(rows_one, rows_two, strict=True)
              for c in r1 if c not in TIMING_COLUMNS and not same_number(r1[c], r2[c])}
    assert not differ
    assert all(r["eval_safety"] and r["decisions"] for r in rows_two)

    # The best checkpoint, as every process knows it.
    assert alone["best_step"] in (1, 2)
    for rank in ranks:
        assert (rank["best_step"], rank["best_safety"]) == (alone["best_step"],
                                                            alone["best_safety"])
    assert (two.out / "best").is_dir()
    # repr: NaN (no collusive pool in Kuhn) equals itself.
    final = [{k: repr(v) for k, v in r["final"].items() if k not in TIMING_COLUMNS}
             for r in ranks]
    assert final[0] == final[1]


def _starting_weights(model_path: Path) -> torch.Tensor:
    from sepo.models import load_model

    model, _ = load_model(str(model_path), device="cpu", dtype="float32")
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_cpu_accelerate_launch_that_starts_one_process_is_named(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, processes: str) -> None:
    """Without a GPU or a config file, `accelerate launch --num_processes 2` runs its simple
    launcher: one process. The environment accelerate gives that process is what
    `lone_launch` recognises; asked for one process, there is nothing to say."""
    from accelerate.commands import launch
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    from sepo.train.sepo import lone_launch

    monkeypatch.setattr(launch, "default_config_file", str(tmp_path / "absent.yaml"))
    args = launch.launch_command_parser().parse_args(
        ["--num_processes", processes, "-m", "sepo", "train", "kuhn"])
    args, _, _ = launch._validate_launch_command(args)
    assert not args.multi_gpu  # so `launch_command` takes the simple launcher
    _, environ = prepare_simple_launcher_cmd_env(args)
    reason = lone_launch(1, environ)
    if processes == "1":
        assert reason is None
    else:
        assert reason is not None and "--multi_gpu --num_processes N" in reason
        assert "torchrun --nproc_per_node N" in reason
    # Under torchrun (accelerate's multi-GPU launcher too) every process knows the world.
    assert lone_launch(1, {**environ, "WORLD_SIZE": "2"}) is None


@pytest.mark.parametrize(("name", "distributed", "processes"), [
    ("one-gpu", "NO", 1), ("ddp", "MULTI_GPU", 2)])
def test_the_accelerate_recipes_load_as_accelerate_reads_them(name: str, distributed: str,
                                                              processes: int) -> None:
    """examples/accelerate/*.yaml (docs/GPU.md, "Recipes"): accelerate's own loader accepts
    them, and precision stays sepo's setting (the trainer passes its own)."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(__file__).parent.parent / "examples" / "accelerate" / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert (config.distributed_type.name, config.num_processes) == (distributed, processes)
    assert config.mixed_precision == "no" and not config.use_cpu
