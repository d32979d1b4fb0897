"""Where the package keeps its caches (`PPRL_CACHE_DIR`)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Directory for decoded-image caches (`PPRL_CACHE_DIR`, default `~/.cache/pprl`)."""
    return Path(os.environ.get("PPRL_CACHE_DIR", Path.home() / ".cache" / "pprl")).expanduser()
