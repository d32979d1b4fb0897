"""The model's own config check: the loss weights (`lambda`), the loss variant (`loss`), the networks (`model`) and
the training schedule (`train`, `seed`) of a composed `train` config, one line per problem naming the key.

`pprl.train` runs it with the other rooms' checks (data, speed settings, attacks) before Hydra writes a run dir.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from .losses import GENERATOR_LOSSES, LAMBDA_KEYS


def config_problems(cfg: DictConfig) -> list[str]:
    """Every problem with the `lambda`, `train`, `model` and `loss` blocks of a `train` config, one line each."""
    return _check_lambda(cfg) + _check_train(cfg) + _check_model(cfg)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_lambda(cfg: DictConfig) -> list[str]:
    lam = cfg["lambda"]  # `cfg.lambda` is a syntax error
    problems = [f"lambda.{key}={value!r}: must be a number >= 0"
                for key, value in lam.items() if not _is_number(value) or value < 0]
    if "release_kl" in lam:
        problems.append("lambda.release_kl: moved to release.mask_kl (not a loss weight)")
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
    return problems


def _check_model(cfg: DictConfig) -> list[str]:
    problems = []
    m = cfg.model
    if not _is_int(m.width) or m.width < 1 or not _is_int(m.latent_dim) or m.latent_dim < 1:
        problems.append(f"model.width / model.latent_dim: must be integers >= 1, got {m.width!r} / {m.latent_dim!r}")
    if "release_kl" in m:
        problems.append("model.release_kl: moved to release.mask_kl (what leaves the model is the release's setting)")
    if cfg.loss.generator not in GENERATOR_LOSSES:
        problems.append(f"loss.generator={cfg.loss.generator!r}: allowed values are {', '.join(GENERATOR_LOSSES)}")
    if cfg.loss.reconstruction not in ("matched", "all"):
        problems.append(f"loss.reconstruction={cfg.loss.reconstruction!r}: allowed values are matched, all")
    smoothing = cfg.loss.label_smoothing
    if not _is_number(smoothing) or not 0 <= smoothing < 1:
        problems.append(f"loss.label_smoothing={smoothing!r}: must be in [0, 1)")
    return problems


def finite_on_every_rank(module, finite_here: bool) -> bool:
    """Whether the loss terms were finite in every process of the run: `finite_here` reduced over the ranks of a DDP
    run (the strategy's all-reduce), as is in a single-process run. Every rank calls it at the same points (the
    divergence guard's checks), so that all of them stop together instead of one raising while the others wait in
    their next collective until the NCCL timeout."""
    trainer = getattr(module, "_trainer", None)
    if trainer is None or int(getattr(trainer, "world_size", 1)) <= 1:
        return finite_here
    return bool(trainer.strategy.reduce_boolean_decision(bool(finite_here), all=True))
