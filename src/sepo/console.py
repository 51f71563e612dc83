"""Terminal output shared by the CLI and the long-running stages: the consoles, one-object JSON
printing, number formatting, the `--json` flag and rich progress bars.

It imports nothing of sepo, so any layer can use it: `sepo.cli` and the pipeline print with it,
and the model build and the trainers draw their progress bars with `new_progress`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console()
err_console = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def print_json(obj: Any) -> None:
    """One JSON object on stdout (plain text: rich would wrap long lines)."""
    typer.echo(json.dumps(obj, indent=2, allow_nan=False))


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def fmt_ci(value: float | None, interval: tuple[float, float] | list[float | None] | None,
           digits: int = 3) -> str:
    """"value [lo, hi]", the way every number is reported."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if interval is None or interval[0] is None or not math.isfinite(interval[0]):
        return fmt(value, digits)
    return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


_COLUMNS: dict[str, Callable[[], ProgressColumn]] = {
    "spinner": SpinnerColumn, "bar": BarColumn, "count": MofNCompleteColumn,
    "elapsed": TimeElapsedColumn, "remaining": TimeRemainingColumn,
}


def new_progress(*columns: str, console: Console | None = None,
                 transient: bool = False) -> Progress:
    """A rich progress bar of `columns`, in order: "spinner", "bar", "count" (done/total),
    "elapsed", "remaining", or any other text, a `TextColumn` template ("{task.description}",
    "[bold]SEPO"). It draws on `console`, by default a new one on stderr, so a command's
    `--json` output on stdout stays clean (a new one: rich allows one live bar per console,
    and bars nest, e.g. a model build inside `sepo run`). `transient`: erased when done, and
    not drawn at all when the console is not a terminal (a log file)."""
    console = console if console is not None else Console(stderr=True)
    made = [_COLUMNS[c]() if c in _COLUMNS else TextColumn(c) for c in columns]
    return Progress(*made, console=console, transient=transient,
                    disable=transient and not console.is_terminal)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr (only on a terminal); yields `update(done, total)`."""
    with new_progress("spinner", "{task.description}", "bar", "count", "elapsed",
                      console=err_console, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
