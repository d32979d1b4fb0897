"""`load_faces` (config -> FaceSplits) and the Lightning data module.

Batches are sliced from one uint8 tensor per split and converted to float in [-1, 1]
per batch (the decoder ends in tanh, paper Table 1); no per-image work happens per epoch.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from . import ferg, folder, mug, synthetic
from .split import FaceSet, FaceSplits, make_splits

SOURCES = {"synthetic": synthetic.load, "ferg": ferg.load, "mug": mug.load, "folder": folder.load}


def images_to_tensor(images) -> torch.Tensor:
    """uint8 (N, H, W, 3) (numpy or torch) -> float32 (N, 3, H, W) in [-1, 1]."""
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8:
            raise TypeError(f"images_to_tensor expects uint8 images, got {images.dtype}")
        return images.permute(0, 3, 1, 2).to(torch.float32).div_(127.5).sub_(1.0)
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise TypeError(f"images_to_tensor expects uint8 images, got {a.dtype}")
    # numpy path: single-threaded and several times faster than torch's for small batches
    out = a.transpose(0, 3, 1, 2).astype(np.float32)
    out /= 127.5
    out -= 1.0
    return torch.from_numpy(out)


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3), clamped."""
    x = x.detach().to("cpu", torch.float32).clamp(-1, 1).add(1).mul(127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _as_dict(cfg) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(cfg, Mapping):
        raise TypeError(f"dataset config must be a mapping, got {type(cfg).__name__}")
    return dict(cfg)


def load_faces(dataset_cfg) -> FaceSplits:
    """Load (decode or read from cache) the configured source and split it (paper §5.1)."""
    cfg = _as_dict(dataset_cfg)
    name = cfg.get("name", "synthetic")
    if name not in SOURCES:
        raise ValueError(f"dataset.name={name!r} is unknown; allowed: {sorted(SOURCES)}")
    size = cfg.get("image_size", 64)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % 16:
        raise ValueError(f"dataset.image_size must be a positive multiple of 16, got {size!r}")
    frac = float(cfg.get("train_fraction", 0.85))
    if not 0.0 < frac < 1.0:
        raise ValueError(f"dataset.train_fraction must be in (0, 1), got {frac}")
    if name != "synthetic" and not cfg.get("root"):
        raise FileNotFoundError(f"dataset.root is not set; the {name!r} source reads images from a folder "
                                f"(see conf/dataset/{name}.yaml for the layout expected)")
    arrays, meta = SOURCES[name](cfg)
    return make_splits(arrays["images"], arrays["identity"], arrays["expression"], meta["identities"],
                       meta["expressions"], train_fraction=frac, seed=int(cfg.get("seed", 0)),
                       leave_out=cfg.get("leave_out") or [], skipped=meta["skipped"], image_size=size)


class TensorBatches(Dataset):
    """Indexed by a *list* of indices: returns a whole batch (x, identity, expression)."""

    def __init__(self, faces: FaceSet):
        self.images = torch.from_numpy(np.ascontiguousarray(faces.images))  # whole split, uint8
        self.identity = torch.from_numpy(faces.identity.astype(np.int64))
        self.expression = torch.from_numpy(faces.expression.astype(np.int64))
        self._np = self.images.numpy()  # same memory; numpy fancy indexing is the fastest gather

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx):
        idx = np.asarray(idx, dtype=np.int64)
        t = torch.from_numpy(idx)
        return images_to_tensor(self._np[idx]), self.identity[t], self.expression[t]


class FaceDataModule(pl.LightningDataModule):
    def __init__(self, dataset_cfg, batch_size: int = 64, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.dataset_cfg = dataset_cfg
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.splits: FaceSplits | None = None
        self._train = self._test = None
        self._generator = torch.Generator().manual_seed(self.seed)

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = load_faces(self.dataset_cfg)
            self._train = TensorBatches(self.splits.train)
            self._test = TensorBatches(self.splits.test)

    def _loader(self, ds: TensorBatches, train: bool) -> DataLoader:
        if train:
            sampler = RandomSampler(ds, generator=self._generator)  # a new permutation every epoch
            drop_last = len(ds) >= self.batch_size
        else:
            sampler, drop_last = SequentialSampler(ds), False
        return DataLoader(ds, sampler=BatchSampler(sampler, self.batch_size, drop_last), batch_size=None,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self._train, True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self._test, False)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self._test, False)
