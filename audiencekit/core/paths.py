"""Where audiencekit keeps files of its own for the user: one folder rule for every such file."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_data_dir"]


def user_data_dir() -> Path:
    """The user's audiencekit data folder (platformdirs' when installed; else the XDG rule:
    ``$XDG_DATA_HOME`` or ``~/.local/share``, then ``audiencekit``), never a shared one."""
    try:
        import platformdirs
    except ImportError:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        return base / "audiencekit"
    return platformdirs.user_data_path("audiencekit")
