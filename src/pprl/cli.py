"""The one Hydra entry helper of every `python -m pprl.<command>`."""

from __future__ import annotations

import sys
from typing import Callable

from omegaconf import DictConfig


def run_hydra(config_name: str, cli: Callable[[DictConfig], int | None]) -> None:
    """Compose `conf/<config_name>.yaml` with the command line, call `cli(cfg)`, exit with its non-zero code.

    `config_dir()` also stores the configs derived from the registries (`attack=all|strong`); every command uses
    the same `version_base`.
    """
    import hydra

    from pprl.config import HYDRA_VERSION_BASE
    from pprl.config import config_dir

    @hydra.main(version_base=HYDRA_VERSION_BASE, config_path=config_dir(), config_name=config_name)
    def _main(cfg: DictConfig) -> None:
        code = cli(cfg)
        if code:
            sys.exit(code)

    _main()
