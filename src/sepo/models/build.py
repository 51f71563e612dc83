"""Building the embedded models into the sepo cache, as `sepo model build` does: `tiny`
(with `--set`/`--pretrain-steps` variants) or `smollm2-135m` converted from its GGUF file.

Nothing here imports torch at the top: a bad tiny setting is refused before `sepo.models.tiny`
(seconds to import) is loaded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from sepo.config_model import check_field, parse_setting
from sepo.errors import SepoError, UnknownNameError, describe_validation_error
from sepo.models.loading import MODEL_NAMES
from sepo.models.tiny_config import TinyConfig  # no torch: `sepo.models.tiny` has it


def build_model(name: str, *, seed: int = 0, force: bool = False,
                settings: Sequence[str] = (), pretrain_steps: int | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Build `name` (`tiny` or `smollm2-135m`) into the cache, or reuse the cached build, and
    return its build record with `path` and `seconds_this_call` added. For `tiny`, `settings`
    (`KEY=VALUE` overrides of `TinyConfig`, see `tiny_config`), `pretrain_steps` and `seed`
    pick the build; a build that is the shipped one's also says whether this host's weights
    match the shipped digest (`shipped_weights_digest`, `matches_shipped`)."""
    t0 = time.perf_counter()
    if name == "tiny":
        config = tiny_config(settings, pretrain_steps)  # before torch is imported
        from sepo.models.tiny import build_info, build_tiny, shipped_tiny

        path = build_tiny(config, seed, force=force, progress=progress)
        record: dict[str, Any] = build_info(path) or {}
        shipped = shipped_tiny()
        shipped_record = (build_info(shipped) or {}) if shipped is not None else {}
        if shipped_record.get("key") is not None and shipped_record["key"] == record.get("key"):
            # The same build as the one `tiny` loads: say whether this host rounds alike.
            digest = shipped_record.get("weights_digest")
            record["shipped_weights_digest"] = digest
            record["matches_shipped"] = digest == record.get("weights_digest")
    elif name == "smollm2-135m":
        from sepo.models.smollm2 import CONVERT_INFO, smollm2_path

        path = smollm2_path(force=force, progress=progress)
        record = json.loads((path / CONVERT_INFO).read_text())
    else:
        raise UnknownNameError("buildable model", name, MODEL_NAMES)
    return {**record, "path": str(path),
            "seconds_this_call": round(time.perf_counter() - t0, 2)}


def tiny_config(settings: Sequence[str], pretrain_steps: int | None = None) -> TinyConfig:
    """The default `TinyConfig` with `--set KEY=VALUE` overrides (VALUE read as JSON when it
    parses) and `--pretrain-steps`. An unknown key names the fields; a bad value is a one-line
    `SepoError` naming the field and the bound. The overrides are checked before
    `sepo.models.tiny` (torch: seconds to import) is imported."""
    overrides: dict[str, Any] = {}
    for item in settings:
        key, value = parse_setting(item, "--set")
        check_field(TinyConfig, "TinyConfig field", key)
        overrides[key] = value
    if pretrain_steps is not None:
        overrides["pretrain_steps"] = pretrain_steps
    _tiny_settings(TinyConfig, TinyConfig().model_dump(), overrides)
    from sepo.models import tiny

    # The build's default is read where the build reads it (tests put a smaller one there).
    default = tiny.TinyConfig()
    return _tiny_settings(type(default), default.model_dump(), overrides)


def _tiny_settings(cls: type[TinyConfig], defaults: dict[str, Any],
                   overrides: dict[str, Any]) -> TinyConfig:
    try:
        return cls.model_validate({**defaults, **overrides})
    except ValidationError as err:
        raise SepoError(f"bad tiny setting: {describe_validation_error(err)}") from None
