"""SEPO stage 2: the trainer (`train_sepo`), its typed config, and run management.

Heavy modules (torch, transformers) load on first use, so `import sepo.train` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sepo.train.config import CREDITS, NORMALIZATIONS, Lambdas, SEPOConfig, load_config

if TYPE_CHECKING:
    from sepo.train.sepo import RunResult, train_sepo

__all__ = ["CREDITS", "NORMALIZATIONS", "Lambdas", "RunResult", "SEPOConfig", "load_config",
           "train_sepo"]


def __getattr__(name: str) -> Any:
    if name in ("train_sepo", "RunResult"):
        from sepo.train import sepo as trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'sepo.train' has no attribute {name!r}")
