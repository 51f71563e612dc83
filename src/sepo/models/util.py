"""Helpers shared by the models modules (`loading`, `tiny`, `smollm2`, `commands`) and the
stages that load models: which device to use, transformers' progress bars, a digest of weights,
writing a built model into the cache.

`loading` imports the builders (`tiny`, `smollm2`) to resolve a model name, and the builders
use these helpers: kept here, below all of them, the imports go one way. Torch and
transformers are imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def resolve_device(device: str | None) -> str:
    """The torch device to use: `device` itself, or for None and "auto" "cuda" when a CUDA GPU
    is available, else "cpu"."""
    if device is not None and device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextmanager
def transformers_progress(show: bool) -> Iterator[None]:
    """transformers' own progress bars (loading and writing weights): off when `show` is
    False, else as the caller left them (so an outer `transformers_progress(False)`, as in
    `sepo run`, keeps them off through every load inside it)."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    if not show:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()


def weights_digest(model: Any) -> str:
    """A short SHA-256 of a model's weights (names, dtypes, shapes and bytes, in name order):
    whether two caches or checkpoints hold the same model.

    Seeded training is bit-identical from run to run on one machine, but float rounding depends
    on the CPU's kernels, so `tiny` built on another machine can differ in the last bits and,
    through training, in every number downstream (docs/BENCHMARKS.md, "Reproducibility across
    machines"). The digest tells the two cases apart.
    """

    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def save_model_dir(target: Path, model: Any, tokenizer: Any, info_file: str,
                   info: dict[str, Any], *, progress: bool) -> Path:
    """Write `model`, `tokenizer` and `info` (as JSON, in `info_file`) to a temporary directory
    beside `target` and rename it into place, replacing an older `target`: an interrupted
    write never leaves a half-written model in the cache. `target`'s parent must exist."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with transformers_progress(progress):
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / info_file).write_text(json.dumps(info, indent=2))
        if target.exists():  # forced rebuild, or another process won the race
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
