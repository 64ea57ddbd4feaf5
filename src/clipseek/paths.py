"""Where clipseek keeps its files. A leaf module (it imports nothing from clipseek), so that any
part (the engine, model files, the CLI) can ask for a path without importing the others."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """``$CLIPSEEK_HOME``, else ``$XDG_DATA_HOME/clipseek``, else ``~/.local/share/clipseek``."""
    env = os.environ.get("CLIPSEEK_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "clipseek"


def models_dir() -> Path:
    """``$CLIPSEEK_HOME/models``: downloaded and unpacked models live beside the collections."""
    return default_data_dir() / "models"


__all__ = ["default_data_dir", "models_dir"]
