"""Checks of a composed config before any work is done: each problem is one line naming the key.

`validate_train_config` runs first thing in `pprl.train.train`, before data is loaded or a model is built.
Identity names for `dataset.leave_out` are checked here where they are known without reading the data
(synthetic, FERG); for MUG and folder datasets the data layer checks them right after listing the data and
before the model is built (`pprl.data.split.resolve_leave_out`, same one-line message).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from pprl.losses import GENERATOR_LOSSES

DATASETS = ("synthetic", "ferg", "mug", "folder")
PRECISIONS = ("32-true", "32", "16", "bf16", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "64",
              "transformer-engine", "transformer-engine-float16")
# which settings block of `cfg.attack` each Table 2 scenario trains with (None: no classifier)
ATTACK_BLOCKS = {"unconstrained": "unconstrained", "random_guess": None, "attack_I": "unconstrained",
                 "attack_II": "attack_II", "attack_III": "attack_III"}


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the allowed values."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_train_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every bad key of a `train` config (one line each)."""
    problems = (_check_lambda(cfg) + _check_train(cfg) + _check_dataset(cfg.dataset) + _check_model(cfg)
                + _check_attack(cfg.get("attack")))
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def _check_lambda(cfg: DictConfig) -> list[str]:
    return [f"lambda.{key}={value!r}: must be a number >= 0"
            for key, value in cfg["lambda"].items() if not _is_number(value) or value < 0]


def _check_train(cfg: DictConfig) -> list[str]:
    problems = []
    t = cfg.train
    if not _is_int(t.g_steps_per_d_step) or t.g_steps_per_d_step < 1:
        problems.append(f"train.g_steps_per_d_step={t.g_steps_per_d_step!r}: must be an integer >= 1")
    if not _is_int(t.batch_size) or t.batch_size < 1:
        problems.append(f"train.batch_size={t.batch_size!r}: must be an integer >= 1")
    if not _is_number(t.lr) or t.lr <= 0:
        problems.append(f"train.lr={t.lr!r}: must be a number > 0")
    every = t.get("checkpoint_every_n_steps", 0)
    if not _is_int(every) or every < 0:
        problems.append(f"train.checkpoint_every_n_steps={every!r}: must be an integer >= 0 (0: at epoch ends only)")
    if not _is_int(cfg.get("seed")):
        problems.append(f"seed={cfg.get('seed')!r}: must be an integer")
    precision = str(cfg.trainer.get("precision", "32-true"))
    if precision not in PRECISIONS:
        problems.append(f"trainer.precision={precision!r}: allowed values are {', '.join(PRECISIONS)}")
    return problems


def _check_model(cfg: DictConfig) -> list[str]:
    problems = []
    m = cfg.model
    if not _is_int(m.width) or m.width < 1 or not _is_int(m.latent_dim) or m.latent_dim < 1:
        problems.append(f"model.width / model.latent_dim: must be integers >= 1, got {m.width!r} / {m.latent_dim!r}")
    for key in ("channels_last", "compile"):
        if not isinstance(m.get(key, False), bool):
            problems.append(f"model.{key}={m.get(key)!r}: must be true or false")
    if cfg.loss.generator not in GENERATOR_LOSSES:
        problems.append(f"loss.generator={cfg.loss.generator!r}: allowed values are {', '.join(GENERATOR_LOSSES)}")
    smoothing = cfg.loss.label_smoothing
    if not _is_number(smoothing) or not 0 <= smoothing < 1:
        problems.append(f"loss.label_smoothing={smoothing!r}: must be in [0, 1)")
    return problems


def _check_dataset(d: DictConfig) -> list[str]:
    problems = []
    size = d.get("image_size")
    if not _is_int(size) or size < 16 or size % 16:
        problems.append(f"dataset.image_size={size!r}: must be a positive multiple of 16 (16, 32, 48, 64, ...)")
    name = d.get("name")
    if name not in DATASETS:
        problems.append(f"dataset.name={name!r}: allowed values are {', '.join(DATASETS)}")
    if name in ("ferg", "mug", "folder") and not d.get("root"):
        problems.append(f"dataset.root: required for dataset={name} (the folder that holds the data)")
    frac = d.get("train_fraction", 0.85)
    if not _is_number(frac) or not 0 < frac < 1:
        problems.append(f"dataset.train_fraction={frac!r}: must be in (0, 1)")
    problems += _check_leave_out(d, name)
    return problems


def _known_labels(d: DictConfig, name: str) -> tuple[list[str] | None, list[str] | None]:
    """(identity names, expression names) of a dataset when they are known without reading it."""
    if name == "synthetic":
        from pprl.data import synthetic

        n = d.get("num_identities", 6)
        return (synthetic.identity_names(n) if _is_int(n) and n > 0 else None), list(synthetic.EXPRESSIONS)
    if name == "ferg":
        from pprl.data import ferg

        return list(ferg.CHARACTERS), list(ferg.EXPRESSIONS)
    if name == "mug":
        from pprl.data import mug

        return None, list(mug.EXPRESSIONS)
    return None, None


def _check_leave_out(d: DictConfig, name: str) -> list[str]:
    leave_out = d.get("leave_out") or []
    if not isinstance(leave_out, (list, tuple, ListConfig)):
        return [f"dataset.leave_out={leave_out!r}: must be a list of [identity, expression] pairs"]
    pairs = OmegaConf.to_container(leave_out) if isinstance(leave_out, ListConfig) else list(leave_out)
    identities, expressions = _known_labels(d, name)
    problems = []
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            problems.append(f"dataset.leave_out: each element must be [identity, expression], got {pair!r}")
            continue
        for value, names, what in ((pair[0], identities, "identity"), (pair[1], expressions, "expression")):
            if names is None:
                continue  # known only once the data is listed: checked by the data layer
            if not (value in names or (_is_int(value) and 0 <= value < len(names))
                    or (isinstance(value, str) and value.isdigit() and int(value) < len(names))):
                problems.append(f"dataset.leave_out: unknown {what} {value!r} in {list(pair)}; "
                                f"allowed: {', '.join(names)} (or an index 0..{len(names) - 1})")
    return problems


def _check_attack(attack: DictConfig | None) -> list[str]:
    """`attack.scenarios` names and the settings blocks they train with (Table 2, `conf/attack/`)."""
    if attack is None:
        return []
    from pprl.attacks.classifiers import FitSettings
    from pprl.attacks.scenarios import ATTACK_III_VARIANTS, SCENARIOS

    scenarios = attack.get("scenarios", list(SCENARIOS))
    if isinstance(scenarios, str) or not isinstance(scenarios, (list, tuple, ListConfig)):
        return [f"attack.scenarios={scenarios!r}: must be a list; allowed names: {', '.join(SCENARIOS)}"]
    problems = [f"attack.scenarios: unknown scenario {s!r}; allowed: {', '.join(SCENARIOS)}"
                for s in scenarios if s not in SCENARIOS]
    blocks = sorted({ATTACK_BLOCKS.get(s) for s in scenarios} - {None})
    for block in blocks:
        settings = attack.get(block)
        if settings is None:
            problems.append(f"attack.{block}: missing settings block (see conf/attack/{block}.yaml)")
            continue
        try:
            FitSettings.from_config(settings, f"attack.{block}")
        except (TypeError, ValueError) as err:
            problems += [line.strip() for line in str(err).splitlines()[1:]] or [f"attack.{block}: {err}"]
    if "attack_III" in blocks:
        variants = list(attack.attack_III.get("variants", ATTACK_III_VARIANTS))
        if not variants or any(v not in ATTACK_III_VARIANTS for v in variants):
            problems.append(f"attack.attack_III.variants={variants}: allowed values are {', '.join(ATTACK_III_VARIANTS)}")
    if not _is_int(attack.get("batch_size", 256)) or attack.get("batch_size", 256) < 1:
        problems.append(f"attack.batch_size={attack.get('batch_size')!r}: must be an integer >= 1")
    from pprl.attacks.strong import config_problems as strong_problems

    return problems + strong_problems(attack, list(scenarios))
