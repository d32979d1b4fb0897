"""Where the package finds its Hydra configs and caches."""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> str:
    """Absolute path of the Hydra config tree (`conf/`).

    In a source checkout (editable install) it is the repository's top-level `conf/`;
    a wheel ships it as `pprl/conf`. `PPRL_CONFIG_DIR` overrides both.
    """
    env = os.environ.get("PPRL_CONFIG_DIR")
    if env:
        return str(Path(env).resolve())
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"pprl: cannot find the config tree next to {here}")


def cache_dir() -> Path:
    """Directory for decoded-image caches (`PPRL_CACHE_DIR`, default `~/.cache/pprl`)."""
    return Path(os.environ.get("PPRL_CACHE_DIR", Path.home() / ".cache" / "pprl")).expanduser()
