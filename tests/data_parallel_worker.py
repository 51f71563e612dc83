"""One process of a data-parallel SEPO run, for tests/test_data_parallel.py.

`run(rank, world, port, config_json, out)` trains as process `rank` of `world` on the gloo
backend (world 1: alone, no process group) and writes what the test compares to
`out/rank{rank}.pt`: the decisions it trained on at each step (prompt and completion ids,
advantage), its trainable weights at the end, and what `train_sepo` returned. Kuhn's pools are
cut to one opponent each first (pools are data), and each process computes on one thread (two
processes share the test machine's cores, and each process's default threads would contend for
them), so that a run takes seconds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sepo.games import get_game
from sepo.train import sepo as trainer
from sepo.train.config import SEPOConfig


def small_kuhn() -> None:
    kuhn = get_game("kuhn")
    kuhn.pools["train"] = ["Nash"]
    kuhn.pools["exploit"] = ["AlwaysBet"]


def run(rank: int, world: int, port: int, config_json: str, out: str) -> None:
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                          WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                          LOCAL_WORLD_SIZE=str(world))
    small_kuhn()
    torch.set_num_threads(1)
    trained: list[list[tuple[list[int], list[int], float]]] = []
    policies: list[Any] = []
    optimise, build_policy = trainer.optimise, trainer.build_policy

    def recording(policy: Any, samples: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        trained.append([(list(s.prompt_ids), list(s.completion_ids), s.advantage)
                        for s in samples])
        return optimise(policy, samples, *args, **kwargs)

    def kept(*args: Any, **kwargs: Any) -> Any:
        policies.append(build_policy(*args, **kwargs))
        return policies[-1]

    trainer.optimise, trainer.build_policy = recording, kept  # type: ignore[assignment]
    try:
        result = trainer.train_sepo(SEPOConfig.model_validate_json(config_json), progress=False)
    finally:
        trainer.optimise, trainer.build_policy = optimise, build_policy  # type: ignore[assignment]
    from accelerate.state import PartialState

    weights = torch.cat([p.detach().flatten() for p in policies[0].trainable_parameters()])
    torch.save({"trained": trained, "weights": weights, "best_step": result.best_step,
                "best_safety": result.best_safety, "final": result.final,
                "world": PartialState().num_processes}, Path(out) / f"rank{rank}.pt")
