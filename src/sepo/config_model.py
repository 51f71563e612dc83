"""The base of sepo's user-facing configs: an unknown field is a one-line error that lists the
fields and suggests the nearest (`UnknownNameError`), not pydantic's `extra_forbidden` message,
which buries the list of fields."""

from __future__ import annotations

import json
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
