"""Shared glue of the Hydra command-line entry points."""

from __future__ import annotations

import sys
from typing import Callable

from omegaconf import DictConfig

from pprl.paths import config_dir


def run_hydra(config_name: str, cli: Callable[[DictConfig], int]) -> None:
    """Compose `conf/<config_name>.yaml` with the command line, call `cli(cfg)`, exit with its non-zero code."""
    import hydra

    @hydra.main(version_base=None, config_path=config_dir(), config_name=config_name)
    def _main(cfg: DictConfig) -> None:
        code = cli(cfg)
        if code:
            sys.exit(code)

    _main()
