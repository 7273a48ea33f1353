"""Where atlas keeps its files (no dependencies: every layer may use it)."""

from __future__ import annotations

import os
from pathlib import Path


def atlas_home() -> Path:
    """``$ATLAS_HOME``, else ``~/.cache/atlas``: models, task downloads and the default atlas."""
    return Path(os.environ.get("ATLAS_HOME", Path.home() / ".cache" / "atlas"))
