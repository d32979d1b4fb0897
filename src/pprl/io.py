"""Loading a trained run safely: checkpoints without pickled code, the run's config as data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

CHECKPOINT_NAME = Path("checkpoints") / "last.ckpt"
MODEL_KEYS = ("encoder.", "decoder.", "discriminator.")


class RunError(ValueError):
    """A run dir or checkpoint that cannot be used (missing, corrupt, from another model)."""


def pick_device(name: str | None = "auto") -> torch.device:
    """`auto` (or empty): cuda if available, else cpu; otherwise the named torch device (cpu, cuda, cuda:1, ...)."""
    if not name or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(str(name))


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


def load_model(run_dir_or_ckpt: str | Path, map_location: str | torch.device = "cpu"):
    """The trained PPRLVGAN of a run dir (or checkpoint), in eval mode."""
    from pprl.module import PPRLVGAN

    path = find_checkpoint(run_dir_or_ckpt)
    ckpt = read_checkpoint(path)
    try:
        model = PPRLVGAN(**ckpt["hyper_parameters"])
        model.on_load_checkpoint(ckpt)
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, RuntimeError) as exc:
        raise RunError(f"{path} does not match this version's PPRL-VGAN: {exc}") from exc
    return model.to(map_location).eval()


def load_run_config(run_dir: str | Path) -> DictConfig:
    """The composed config of a training run (`.hydra/config.yaml`), read as data."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run_dir} has no .hydra/config.yaml: not a pprl training run dir")
    return OmegaConf.load(path)
