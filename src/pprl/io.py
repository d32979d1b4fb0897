"""Loading a trained run safely: checkpoints without pickled code, the run's config as data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from pprl.config import config_dir
from pprl.errors import ConfigError, RunError  # noqa: F401  (RunError re-exported: `from pprl.io import RunError`)

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


#: what checkpoints written before the model was built from conf/model/*.yaml lack, with the values the code of
#: that time used (they reproduce those models exactly)
_LEGACY_MODEL = {"init_std": 0.01, "latent_adversary_hidden": [256, 256, 256], "seed": 0, "release_kl": 0.0,
                 "channels_last": False, "compile": False, "g_steps_per_d_step": 2, "lr": 2e-4,
                 "upsample": "transposed", "spectral_norm": False, "ema_decay": 0.0, "diff_augment": [],
                 "lr_decay_from": None}


def upgrade_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of today's `PPRLVGAN` from a checkpoint's hyper-parameters, including those of
    checkpoints written by earlier versions (flat loss settings, `release_kl` among the loss weights, no `d5`)."""
    hp = dict(hparams)
    lambdas = dict(hp.get("lambdas") or OmegaConf.load(Path(config_dir()) / "lambda" / "paper.yaml"))
    if "release_kl" in lambdas:
        hp.setdefault("release_kl", lambdas.pop("release_kl"))
    lambdas.setdefault("rec", 0.0)
    lambdas.setdefault("g5", 0.0)
    lambdas.setdefault("d5", 1.0 if lambdas["g5"] > 0 else 0.0)  # the adversary trained with weight 1 iff g5 > 0
    hp["lambdas"] = lambdas
    if "loss" not in hp:
        hp["loss"] = {"generator": hp.pop("generator_loss", "nonsaturating"),
                      "d1_fake_weight": hp.pop("d1_fake_weight", None),
                      "label_smoothing": hp.pop("label_smoothing", 0.0)}
    hp["loss"] = {"reconstruction": "matched", "r1_interval": 1, **hp["loss"]}
    lambdas.setdefault("r1", 0.0)
    lambdas.setdefault("fm", 0.0)
    for key, value in _LEGACY_MODEL.items():
        hp.setdefault(key, value)
    hp.setdefault("lr_d", hp["lr"])
    return hp


def load_model(run_dir_or_ckpt: str | Path, map_location: str | torch.device = "cpu"):
    """The trained PPRLVGAN of a run dir (or checkpoint), in eval mode."""
    from pprl.module import PPRLVGAN

    path = find_checkpoint(run_dir_or_ckpt)
    ckpt = read_checkpoint(path)
    # `compile` is a training-speed switch (on by default on CUDA): a loaded model runs eagerly, since compiling
    # it would cost more than the inference it serves and needs a C compiler on the CPU
    hparams = {**upgrade_hparams(ckpt["hyper_parameters"]), "compile": False}
    try:
        model = PPRLVGAN(**hparams)
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
