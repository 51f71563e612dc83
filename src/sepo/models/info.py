"""What `sepo model info` reports about a model: size, vocabulary, context, where it lives,
whether it is ready for chat, and a digest of its weights."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sepo.errors import SepoError
from sepo.models.util import weights_digest


def model_info(name_or_path: str, *, device: str | None = "cpu", dtype: str | None = None,
               progress: bool = True) -> dict[str, Any]:
    """What `sepo model info` reports: size, vocabulary, context, where it lives, and whether
    it is ready for chat. A broken model (unreadable files, weights that do not fit its
    config, NaN weights) is a one-line `SepoError` from `load_model`."""
    from sepo.models.loading import _device, _dtype, load_model, resolve
    from sepo.models.tiny import BUILD_INFO, build_info

    # `load_model`'s own checks, first: `resolve` may build tiny (minutes) before it runs them.
    _dtype(dtype, _device(device)[0])
    source = resolve(name_or_path, progress=progress)
    t0 = time.perf_counter()
    model, tokenizer = load_model(name_or_path, device=device, dtype=dtype, progress=progress)
    load_s = time.perf_counter() - t0
    cfg = model.config
    info: dict[str, Any] = {
        "name": name_or_path,
        "path": source,
        "architecture": (cfg.architectures or [type(model).__name__])[0],
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "context_length": getattr(cfg, "max_position_embeddings", None),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "device": str(next(model.parameters()).device),
        "chat_template": bool(tokenizer.chat_template),
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "padding_side": tokenizer.padding_side,
        "load_seconds": round(load_s, 2),
        # Of the weights as loaded (dtype included): whether two caches hold the same model.
        "weights_digest": weights_digest(model),
    }
    try:
        build = build_info(Path(source)) if Path(source).exists() else None
    except (ValueError, OSError) as err:  # a damaged sepo_build.json: one line, no traceback
        raise SepoError(f"{source!r}: {BUILD_INFO} is not valid JSON: "
                        f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
                        ) from err
    if build is not None:
        info["build"] = {k: build[k] for k in ("seed", "games", "seconds", "loss_last",
                                                 "torch", "cpu")
                         if k in build}
    return info
