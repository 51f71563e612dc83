"""Errors a user can act on: each names the problem and, where there are choices, lists them."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pydantic is only needed to describe its errors, not to import this
    from pydantic import ValidationError


class SepoError(Exception):
    """Base class of errors that the CLI prints as a one-line message (no traceback)."""


class UnknownNameError(SepoError, KeyError):
    """An unknown game, strategy, model, pool or config field."""

    def __init__(self, kind: str, name: object, choices: Iterable[str]) -> None:
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        close = difflib.get_close_matches(str(name), self.choices, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        super().__init__(
            f"unknown {kind} {name!r}.{hint} Choices: {', '.join(self.choices) or '(none)'}"
        )

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class MissingDependencyError(SepoError, ImportError):
    """An optional dependency is not installed; the message says how to install it."""

    def __init__(self, package: str, purpose: str, install: str) -> None:
        super().__init__(f"{purpose} needs the package {package!r}, which is not installed. "
                         f"Install it with: {install}")


def shown_value(value: Any, limit: int = 80) -> str:
    """A value for an error message: strings quoted, long ones cut in the middle."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else f"{text[:limit // 2]}…{text[-(limit // 2):]}"


def describe_validation_error(err: ValidationError) -> str:
    """`field: message (got value)` for each invalid field of a pydantic model, joined by
    "; ": e.g. `steps: Input should be greater than or equal to 1 (got 0)`."""
    parts = []
    for item in err.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or err.title
        message = item["msg"].removeprefix("Value error, ")
        value = item.get("input")
        # A whole config (a model-level check) would only repeat what the user wrote.
        got = "" if isinstance(value, dict) or not item["loc"] else f" (got {shown_value(value)})"
        parts.append(f"{where}: {message}{got}")
    return "; ".join(parts)
