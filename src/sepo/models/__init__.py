"""Language models: the embedded `tiny`, `smollm2-135m` (GGUF), and any HF causal LM.

`load_model(name_or_path)` returns `(model, tokenizer)` ready for batched chat generation:
the model in eval mode, the tokenizer with a chat template, a pad token and left padding.
Heavy imports (torch, transformers) happen on first use, so importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from sepo.models.loading import (
    MODEL_NAMES,
    check_vocabulary,
    load_model,
    model_names,
    prepare_tokenizer,
    resolve,
)
from sepo.models.paths import cache_dir

_LAZY = {"TinyConfig": "sepo.models.tiny", "build_tiny": "sepo.models.tiny"}


def __getattr__(name: str) -> Any:  # PEP 562: `sepo.models.TinyConfig` without importing torch
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sepo.models' has no attribute {name!r}")


__all__ = [
    "MODEL_NAMES",
    "TinyConfig",
    "build_tiny",
    "cache_dir",
    "check_vocabulary",
    "load_model",
    "model_names",
    "prepare_tokenizer",
    "resolve",
]
