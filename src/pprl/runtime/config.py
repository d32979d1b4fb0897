"""The config tree (`conf/`): where it is, and composing it, also outside a Hydra app (tests, notebooks).

Checking a composed config is each room's own business (`pprl.model.checks`, `pprl.datasets.registry`,
`pprl.attacks.registry`, `pprl.runtime.speed`); a command hands its checks to `pprl.runtime.cli.run_hydra`.
Configs derived from a registry (the attack suites `attack=all|strong`) are put into Hydra's ConfigStore when their
room is imported (`pprl.attacks`): a command or test composing a config that uses them imports that room first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

#: the one `version_base` of every Hydra entry point and compose call
HYDRA_VERSION_BASE = "1.3"


def config_dir() -> str:
    """Absolute path of the Hydra config tree (`conf/`).

    In a source checkout (editable install) it is the repository's top-level `conf/`;
    a wheel ships it as `pprl/conf`. `PPRL_CONFIG_DIR` overrides both.
    """
    env = os.environ.get("PPRL_CONFIG_DIR")
    if env:
        return str(Path(env).resolve())
    package = Path(__file__).resolve().parents[1]  # src/pprl (a checkout) or site-packages/pprl (a wheel)
    for candidate in (package / "conf", package.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"pprl: cannot find the config tree next to {package}")


def compose_config(config_name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
    """`conf/<config_name>.yaml` composed with `overrides`, inside a Hydra app (its search path) or outside
    (tests, notebooks, benchmarks). The composed `run_dir` of `train` is an unresolved `${hydra:...}` outside
    an app: set it before resolving."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name, overrides=list(overrides))
    with initialize_config_dir(config_dir=config_dir(), version_base=HYDRA_VERSION_BASE):
        return compose(config_name, overrides=list(overrides))
