"""Where sepo keeps what it builds and converts (models), shared by every models module."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """sepo's cache: `$SEPO_CACHE`, else `$XDG_CACHE_HOME/sepo`, else `~/.cache/sepo`."""
    if os.environ.get("SEPO_CACHE"):
        return Path(os.environ["SEPO_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "sepo"
    return Path.home() / ".cache" / "sepo"
