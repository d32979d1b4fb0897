"""The release a trained run ships with: its `release` config block, kept in the checkpoint by `pprl.train`
(`PPRLVGAN.release_settings`), so a checkpoint file copied on its own still says what it releases.

Checkpoints written before releases were configurable carry none: they release as the paper does (a draw), which
is what their Table 2 measured for the protected images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .registry import build_release

#: the paper's release (`conf/release/paper.yaml`), for checkpoints that name none
PAPER_RELEASE = {"name": "paper", "kind": "draw"}


def release_of(model, settings: Mapping[str, Any] | None = None):
    """The `Release` of a loaded model: `settings` when given (a `conf/release` block), else the one it was
    trained with, else the paper's."""
    return build_release(model, dict(settings or model.release_settings or PAPER_RELEASE))


def load_release(run_dir_or_ckpt: str | Path, map_location: str | torch.device = "cpu",
                 settings: Mapping[str, Any] | None = None):
    """(model in eval mode, its `Release`) of a run dir or checkpoint: the release the run was trained with, or
    `settings` (a `conf/release` block, e.g. `{"name": "paper", "kind": "draw"}`) instead; see `release_of`.
    `map_location` is where the weights go (`"cpu"`, `"cuda"`, a `torch.device`)."""
    from pprl.model.load import load_model

    model = load_model(run_dir_or_ckpt, map_location=map_location)
    return model, release_of(model, settings)
