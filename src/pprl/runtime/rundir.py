"""A run dir as files: where its checkpoint is, reading it without pickled code, its config as data, the device.

Nothing here knows the model: `pprl.model.load` builds the trained PPRL-VGAN from what `read_checkpoint` returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from pprl.runtime.errors import ConfigError, RunError

CHECKPOINT_NAME = Path("checkpoints") / "last.ckpt"
MODEL_KEYS = ("encoder.", "decoder.", "discriminator.")


def pick_device(name: str | None = "auto") -> torch.device:
    """`auto` (or empty): cuda if available, else cpu; otherwise the named torch device (cpu, cuda, cuda:1, ...).

    A device this torch cannot use is a ConfigError naming `device=` and what works here."""
    if not name or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except RuntimeError:
        raise ConfigError(f"device={name!r}: not a torch device; use device=auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no CUDA device visible"
            raise ConfigError(f"device={name!r}: this torch ({torch.__version__}) has {build}; "
                              "use device=cpu or device=auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={name!r}: only {torch.cuda.device_count()} CUDA device(s) visible "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); use device=auto or cuda:0")
    elif device.type not in ("cpu", "mps", "xpu", "meta"):
        raise ConfigError(f"device={name!r}: use device=auto, cpu, cuda or cuda:<index>")
    return device


def find_checkpoint(run_dir_or_ckpt: str | Path) -> Path:
    """`<run_dir>/checkpoints/last.ckpt`, or the path itself if it is a checkpoint file."""
    path = Path(run_dir_or_ckpt).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        ckpt = path / CHECKPOINT_NAME
        if ckpt.is_file():
            return ckpt
        raise RunError(f"run dir {path} holds no checkpoint ({CHECKPOINT_NAME} is missing): was training finished?")
    raise RunError(f"no run dir or checkpoint at {path}")


def run_dir_of(run_dir_or_ckpt: str | Path) -> Path:
    """The run dir of a run dir or of a checkpoint inside `<run_dir>/checkpoints/`."""
    path = Path(run_dir_or_ckpt).expanduser().resolve()
    if path.is_file():
        return path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` (no arbitrary code runs); clear errors for bad files."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, not a torch file, or holding pickled objects
        raise RunError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise RunError(f"{path} is not a pprl checkpoint (no state_dict / hyper_parameters)")
    state = ckpt["state_dict"]
    if not any(k.startswith(MODEL_KEYS) for k in state) or "num_identities" not in ckpt["hyper_parameters"]:
        raise RunError(f"{path} is a checkpoint of another model, not PPRL-VGAN")
    return ckpt


#: `_target_` paths that run configs written before the package's layout change name -> today's
LEGACY_TARGETS = {"pprl.model.module.PPRLVGAN": "pprl.model.module.PPRLVGAN",
                  "pprl.loggers.CSVLogger": "pprl.runtime.loggers.CSVLogger"}


def load_run_config(run_dir: str | Path) -> DictConfig:
    """The composed config of a training run (`.hydra/config.yaml`), read as data; `_target_` paths of earlier
    pprl versions are mapped to today's (`LEGACY_TARGETS`)."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run_dir} has no .hydra/config.yaml: not a pprl training run dir")
    cfg = OmegaConf.load(path)
    for key in ("model", "logger"):
        block = cfg.get(key)
        if isinstance(block, DictConfig) and block.get("_target_") in LEGACY_TARGETS:
            block._target_ = LEGACY_TARGETS[block._target_]
    return cfg
