"""Errors a user can act on: each names the problem and, where there are choices, lists them."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
