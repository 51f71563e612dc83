"""The base of sepo's user-facing configs: an unknown field is a one-line error that lists the
fields and suggests the nearest (`UnknownNameError`), not pydantic's `extra_forbidden` message,
which buries the list of fields. Also the settings a command reads for its config model:
a TOML file (`--config`) and `KEY=VALUE` items (`--set`), merged into one dict of fields."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

from sepo.errors import SepoError, UnknownNameError


def check_field(model: type[BaseModel], kind: str, name: str) -> None:
    """Refuse a `name` that is not a field of `model`: `UnknownNameError(kind, name, fields)`."""
    if name not in model.model_fields:
        raise UnknownNameError(kind, name, list(model.model_fields))


def parse_setting(item: str, option: str) -> tuple[str, Any]:
    """One `KEY=VALUE` of a repeatable option (`--set`, `--sepo`): VALUE is read as JSON when
    it parses (numbers, true, lists), else kept as text. Without `=` or KEY it is a `SepoError`
    naming `option`."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SepoError(f"{option} expects KEY=VALUE, got {item!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def nested_setting(key: str, value: Any, option: str) -> dict[str, Any]:
    """A setting as a table: a dotted KEY reaches a field of a nested config or table
    (`sepo.lr`, `lambdas.exploit`): `("a.b", v)` → `{"a": {"b": v}}`. An empty part of KEY is
    a `SepoError` naming `option`."""
    parts = key.split(".")
    if not all(parts):
        raise SepoError(f"{option} expects KEY=VALUE with KEY a field name or dotted names "
                        f"(sepo.lr), got {key!r}")
    for part in reversed(parts[1:]):
        value = {part: value}
    return {parts[0]: value}


def merge_settings(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """The layers' settings, a later layer's value replacing an earlier one's; a table set in
    two layers is merged key by key the same way (the file's `[sepo]` table and `--set
    sepo.lr=...` both count). The layers are not modified."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = merge_settings(merged[key], value)
            else:
                merged[key] = merge_settings(value) if isinstance(value, Mapping) else value
    return merged


def read_settings_file(path: Path, option: str = "--config") -> dict[str, Any]:
    """The top-level table of a TOML config file. A file that is missing, unreadable, not
    UTF-8 or not valid TOML is a one-line `SepoError` naming `option`, the file and the
    problem."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as err:
        raise SepoError(f"{option} {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise SepoError(f"{option} {path} is not UTF-8 text: {err.reason} at byte "
                        f"{err.start}") from None
    except tomllib.TOMLDecodeError as err:
        raise SepoError(f"{option} {path} is not valid TOML: {err}") from None


def read_settings(config_file: Path | None, items: Sequence[str] = (),
                  option: str = "--set") -> dict[str, Any]:
    """The settings of a TOML file (if any) overridden by `KEY=VALUE` items (`parse_setting`,
    dotted keys as in `nested_setting`), later items winning. Nothing is checked against a
    model here: the model refuses an unknown field or a bad value when it is built."""
    layers = [read_settings_file(config_file)] if config_file is not None else []
    layers += [nested_setting(*parse_setting(item, option), option) for item in items]
    return merge_settings(*layers)


class StrictModel(BaseModel):
    """A pydantic model that forbids unknown fields (`extra="forbid"`), refusing the first one
    given with `check_field`'s error, before any field is validated."""

    model_config = ConfigDict(extra="forbid")
    #: What the error calls a field of this model ("SEPO config field").
    field_kind: ClassVar[str] = "field"

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                check_field(cls, cls.field_kind, key)
        return data
