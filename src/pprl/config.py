"""Checks of a composed config before any work is done: each problem is one line naming the key."""

from __future__ import annotations

from omegaconf import DictConfig

from pprl.losses import GENERATOR_LOSSES

DATASETS = ("synthetic", "ferg", "mug", "folder")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the allowed values."""


def validate_train_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every bad key of a `train` config (one line each)."""
    problems: list[str] = []
    for key, value in cfg["lambda"].items():
        if not isinstance(value, (int, float)) or value < 0:
            problems.append(f"lambda.{key}={value!r}: must be a number >= 0")
    g_steps = cfg.train.g_steps_per_d_step
    if not isinstance(g_steps, int) or g_steps < 1:
        problems.append(f"train.g_steps_per_d_step={g_steps!r}: must be an integer >= 1")
    if not isinstance(cfg.train.batch_size, int) or cfg.train.batch_size < 1:
        problems.append(f"train.batch_size={cfg.train.batch_size!r}: must be an integer >= 1")
    if not cfg.train.lr or cfg.train.lr <= 0:
        problems.append(f"train.lr={cfg.train.lr!r}: must be > 0")
    size = cfg.dataset.get("image_size")
    if not isinstance(size, int) or size < 16 or size % 16:
        problems.append(f"dataset.image_size={size!r}: must be a positive multiple of 16 (16, 32, 48, 64, ...)")
    name = cfg.dataset.get("name")
    if name not in DATASETS:
        problems.append(f"dataset.name={name!r}: allowed values are {', '.join(DATASETS)}")
    if name in ("ferg", "mug", "folder") and not cfg.dataset.get("root"):
        problems.append(f"dataset.root: required for dataset={name} (the folder that holds the data)")
    if cfg.loss.generator not in GENERATOR_LOSSES:
        problems.append(f"loss.generator={cfg.loss.generator!r}: allowed values are {', '.join(GENERATOR_LOSSES)}")
    smoothing = cfg.loss.label_smoothing
    if not 0 <= smoothing < 1:
        problems.append(f"loss.label_smoothing={smoothing!r}: must be in [0, 1)")
    if cfg.model.width < 1 or cfg.model.latent_dim < 1:
        problems.append(f"model.width / model.latent_dim: must be >= 1, got {cfg.model.width} / {cfg.model.latent_dim}")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
