"""The config tree: composing it (also outside a Hydra app) and checking a composed config before any work.

`validate_train_config` runs first thing in `pprl.train.train`, before data is loaded or a model is built; each
problem is one line naming the key. The dataset and attack checks come from their registries
(`pprl.data.registry.dataset_problems`, `pprl.attacks.registry.config_problems`). Identity names for
`dataset.leave_out` are checked here where they are known without reading the data (synthetic, FERG); for MUG
and folder datasets the split checks them right after listing the data, before the model is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig

from pprl.errors import ConfigError  # noqa: F401  (re-exported: `from pprl.config import ConfigError`)
from pprl.losses import GENERATOR_LOSSES, LAMBDA_KEYS

PRECISIONS = ("auto", "32-true", "32", "16", "bf16", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true",
              "64", "transformer-engine", "transformer-engine-float16")
#: the one `version_base` of every Hydra entry point and compose call
HYDRA_VERSION_BASE = "1.3"


def config_dir() -> str:
    """Absolute path of the Hydra config tree (`conf/`).

    In a source checkout (editable install) it is the repository's top-level `conf/`;
    a wheel ships it as `pprl/conf`. `PPRL_CONFIG_DIR` overrides both. The configs derived from the registries
    (`attack=all|strong`, `pprl.config.register_configs`) are put into Hydra's ConfigStore on the way, so any
    app composing this tree sees them.
    """
    register_configs()
    env = os.environ.get("PPRL_CONFIG_DIR")
    if env:
        return str(Path(env).resolve())
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"pprl: cannot find the config tree next to {here}")


def register_configs() -> None:
    """Add the configs derived from the registries to Hydra's ConfigStore (`attack=all`, `attack=strong`).

    Called by `config_dir`, which every entry point and compose call asks for the config tree.
    """
    from pprl.attacks import store_suites

    store_suites()


def compose_config(config_name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
    """`conf/<config_name>.yaml` composed with `overrides`, inside a Hydra app (its search path) or outside
    (tests, notebooks, benchmarks). The composed `run_dir` of `train` is an unresolved `${hydra:...}` outside
    an app: set it before resolving."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        register_configs()
        return compose(config_name, overrides=list(overrides))
    with initialize_config_dir(config_dir=config_dir(), version_base=HYDRA_VERSION_BASE):
        return compose(config_name, overrides=list(overrides))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_train_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every bad key of a `train` config (one line each)."""
    from pprl.attacks import config_problems
    from pprl.data import dataset_problems
    from pprl.speed import setting_problems

    problems = (_check_lambda(cfg) + _check_train(cfg) + dataset_problems(cfg.dataset) + _check_model(cfg)
                + setting_problems(cfg) + config_problems(cfg.get("attack")))
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def _check_lambda(cfg: DictConfig) -> list[str]:
    lam = cfg["lambda"]  # `cfg.lambda` is a syntax error
    problems = [f"lambda.{key}={value!r}: must be a number >= 0"
                for key, value in lam.items() if not _is_number(value) or value < 0]
    if "release_kl" in lam:
        problems.append("lambda.release_kl: moved to model.release_kl (not a loss weight)")
    missing = [k for k in LAMBDA_KEYS if k not in lam]
    if missing:
        problems.append(f"lambda: missing weight(s) {missing}; the flat dict needs {', '.join(LAMBDA_KEYS)}")
    return problems


def _check_train(cfg: DictConfig) -> list[str]:
    problems = []
    t = cfg.train
    if not _is_int(t.g_steps_per_d_step) or t.g_steps_per_d_step < 1:
        problems.append(f"train.g_steps_per_d_step={t.g_steps_per_d_step!r}: must be an integer >= 1")
    if not _is_int(t.batch_size) or t.batch_size < 1:
        problems.append(f"train.batch_size={t.batch_size!r}: must be an integer >= 1")
    if not _is_number(t.lr) or t.lr <= 0:
        problems.append(f"train.lr={t.lr!r}: must be a number > 0")
    every = t.checkpoint_every_n_steps
    if not _is_int(every) or every < 0:
        problems.append(f"train.checkpoint_every_n_steps={every!r}: must be an integer >= 0 (0: at epoch ends only)")
    if not _is_int(cfg.get("seed")):
        problems.append(f"seed={cfg.get('seed')!r}: must be an integer")
    precision = str(cfg.trainer.precision)
    if precision not in PRECISIONS:
        problems.append(f"trainer.precision={precision!r}: allowed values are {', '.join(PRECISIONS)}")
    return problems


def _check_model(cfg: DictConfig) -> list[str]:
    problems = []
    m = cfg.model
    if not _is_int(m.width) or m.width < 1 or not _is_int(m.latent_dim) or m.latent_dim < 1:
        problems.append(f"model.width / model.latent_dim: must be integers >= 1, got {m.width!r} / {m.latent_dim!r}")
    if not _is_number(m.release_kl) or m.release_kl < 0:
        problems.append(f"model.release_kl={m.release_kl!r}: must be a number >= 0 (nats; 0 releases every dim)")
    if cfg.loss.generator not in GENERATOR_LOSSES:
        problems.append(f"loss.generator={cfg.loss.generator!r}: allowed values are {', '.join(GENERATOR_LOSSES)}")
    if cfg.loss.reconstruction not in ("matched", "all"):
        problems.append(f"loss.reconstruction={cfg.loss.reconstruction!r}: allowed values are matched, all")
    smoothing = cfg.loss.label_smoothing
    if not _is_number(smoothing) or not 0 <= smoothing < 1:
        problems.append(f"loss.label_smoothing={smoothing!r}: must be in [0, 1)")
    return problems
