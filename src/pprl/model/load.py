"""Loading a trained PPRL-VGAN from a run dir or checkpoint, including checkpoints of earlier pprl versions.

The checkpoint is read by `pprl.runtime.rundir.read_checkpoint` (`weights_only=True`: no code runs); its
hyper-parameters are the constructor arguments of `PPRLVGAN` and name no module path, so files written before
the package layout changed load as they are. `upgrade_hparams` fills what older checkpoints lack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from pprl.runtime.config import config_dir
from pprl.runtime.errors import RunError
from pprl.runtime.rundir import find_checkpoint, read_checkpoint

#: what checkpoints written before the model was built from conf/model/*.yaml lack, with the values the code of
#: that time used (they reproduce those models exactly)
_LEGACY_MODEL = {"init_std": 0.01, "latent_adversary_hidden": [256, 256, 256], "seed": 0,
                 "channels_last": False, "compile": False, "g_steps_per_d_step": 2, "lr": 2e-4,
                 "upsample": "transposed", "spectral_norm": False, "ema_decay": 0.0, "diff_augment": [],
                 "lr_decay_from": None}


def upgrade_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of today's `PPRLVGAN` from a checkpoint's hyper-parameters, including those of
    checkpoints written by earlier versions (flat loss settings, no `d5`; a `release_kl` threshold, among the loss
    weights or the model's settings, is dropped: what a model releases is its `release` setting, `pprl.release`)."""
    hp = dict(hparams)
    lambdas = dict(hp.get("lambdas") or OmegaConf.load(Path(config_dir()) / "lambda" / "paper.yaml"))
    lambdas.pop("release_kl", None)
    hp.pop("release_kl", None)
    lambdas.setdefault("rec", 0.0)
    lambdas.setdefault("g5", 0.0)
    lambdas.setdefault("d5", 1.0 if lambdas["g5"] > 0 else 0.0)  # the adversary trained with weight 1 iff g5 > 0
    lambdas.setdefault("d6", 0.0)
    lambdas.setdefault("g6", 0.0)
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
    from .module import PPRLVGAN

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


