"""Shared fixtures: the real Hydra config, shrunk, and a tiny trained run dir."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

import pprl.attacks  # noqa: F401  (stores the attack suites `attack=all|strong` that the train config composes)
from pprl.runtime.config import compose_config

# Tiny networks gain nothing from intra-op threads, and on a busy 2-core machine two threads waiting on each
# other made tiny runs 10-25x slower: the suite (and the CLIs it starts) use one thread.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Tiny but real: 16 px faces, 3 identities x 7 expressions x 8 images, 4-channel networks.
TINY_OVERRIDES = [
    "dataset.image_size=16",
    "dataset.num_identities=3",
    "dataset.images_per_group=8",
    "model.width=4",
    "model.latent_dim=8",
    "train.batch_size=16",
    "train.figure_every_n_epochs=1",
    "train.figure_rows=3",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "logger=csv",
    "evaluate=false",
]


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Caches and W&B files go to temporary folders; W&B never reaches the network."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("PPRL_CACHE_DIR", str(base / "pprl_cache"))
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(base / "wandb" / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def compose_train(run_dir: Path, overrides: list[str] | None = None) -> DictConfig:
    """The real `train` config, composed through Hydra with the tiny overrides (then `overrides`)."""
    cfg = compose_config("train", TINY_OVERRIDES + list(overrides or []))
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    return cfg


def paper_lambdas() -> dict[str, float]:
    """The paper's loss weights (conf/lambda/paper.yaml), as a plain dict."""
    return OmegaConf.to_container(compose_config("train", ["lambda=paper"])["lambda"])


def tiny_model(splits=None, overrides: list[str] | None = None, num_identities: int = 3, num_expressions: int = 7,
               image_size: int = 16):
    """A PPRLVGAN built from the real, tiny config (as `pprl.train` builds it), for `splits` or the given sizes."""
    import hydra

    from pprl.runtime.speed import model_switches, run_device

    cfg = compose_train(Path("unused"), [f"dataset.image_size={splits.image_size if splits else image_size}",
                                         *(overrides or [])])
    names = {} if splits is None else {"identity_names": list(splits.identities),
                                       "expression_names": list(splits.expressions)}
    return hydra.utils.instantiate(cfg.model, num_identities=splits.num_identities if splits else num_identities,
                                   num_expressions=splits.num_expressions if splits else num_expressions,
                                   _convert_="all", **names, **model_switches(cfg.model, run_device(cfg.trainer)))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run dir trained for 2 tiny epochs through `pprl.train.train` (checkpoint, figures, summary, .hydra)."""
    from pprl.train import train

    base = tmp_path_factory.getbasetemp()
    os.environ.setdefault("PPRL_CACHE_DIR", str(base / "pprl_cache"))
    os.environ.setdefault("WANDB_MODE", "offline")
    run_dir = base / "tiny_run"
    cfg = compose_train(run_dir)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    train(cfg)
    return run_dir


def find_block(image: np.ndarray, block: np.ndarray) -> tuple[int, int] | None:
    """(row, col) where `block` sits in `image` pixel for pixel, or None."""
    bh, bw = block.shape[:2]
    for y in range(image.shape[0] - bh + 1):
        for x in np.flatnonzero((image[y, :image.shape[1] - bw + 1] == block[0, 0]).all(-1)):
            if (image[y:y + bh, x:x + bw] == block).all():
                return y, int(x)
    return None


def skip_without_faces_extra() -> None:
    """Skip the calling test module unless the `faces` extra is installed (dlib, PyAV and the model files of
    face_recognition_models, found without importing it: it needs pkg_resources, gone from recent setuptools)."""
    import importlib.util

    pytest.importorskip("dlib")
    pytest.importorskip("av")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("the faces extra is not installed (face_recognition_models)", allow_module_level=True)
