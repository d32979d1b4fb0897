"""`load_faces` (config -> FaceSplits) and the Lightning data module.

Batches are sliced from one uint8 tensor per split and converted to float in [-1, 1]
per batch (the decoder ends in tanh, paper Table 1); no per-image work happens per epoch.

Exact resume: the training order of epoch e is a function of (seed, e) alone (`EpochBatchSampler`), and the
training loader (`ResumableLoader`) reports its place in the epoch to Lightning's checkpoint, so a run resumed
mid-epoch continues with the next unseen batch of the same permutation.

Device path (`train.data_on_device`; `pprl.runtime.pixels`): the splits' uint8 images and labels are copied
to the model's device once, the epoch's permutation once per epoch, and each batch is a slice of it gathered and
converted there. Same order, same values: only where the work happens changes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from pprl.runtime.errors import ConfigError
from pprl.runtime.pixels import images_to_tensor, to_float

from .registry import dataset_problems, sources
from .split import FaceSet, FaceSplits, make_splits


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
    """Load (decode or read from cache) the configured source and split it (paper §5.1).

    The config is checked first (`registry.dataset_problems`): a ConfigError (a ValueError) lists every bad key, one line each.
    """
    cfg = _as_dict(dataset_cfg)
    problems = dataset_problems(cfg)
    if problems:
        raise ConfigError("invalid dataset config:\n  " + "\n  ".join(problems))
    arrays, meta = sources()[cfg["name"]].load(cfg)
    return make_splits(arrays["images"], arrays["identity"], arrays["expression"], meta["identities"],
                       meta["expressions"], train_fraction=float(cfg["train_fraction"]), seed=int(cfg["seed"]),
                       leave_out=cfg.get("leave_out") or [], skipped=meta["skipped"], image_size=int(cfg["image_size"]),
                       val_fraction=float(cfg.get("val_fraction") or 0.0))


class TensorBatches(Dataset):
    """Indexed by a *list* of indices: returns a whole batch (x, identity, expression).

    After `to(device)` the split lives on `device` and is indexed by index tensors there (the device path).
    """

    def __init__(self, faces: FaceSet):
        self.images = torch.from_numpy(np.ascontiguousarray(faces.images))  # whole split, uint8
        self.identity = torch.from_numpy(faces.identity.astype(np.int64))
        self.expression = torch.from_numpy(faces.expression.astype(np.int64))
        self._np = self.images.numpy()  # same memory; numpy fancy indexing is the fastest gather
        self.device: torch.device | None = None

    def to(self, device: torch.device | str) -> "TensorBatches":
        """Keep the split on `device` (one copy); batches are then gathered and converted there."""
        device = torch.device(device)
        if self.device != device:
            self.images, self.identity, self.expression = (t.to(device) for t in
                                                           (self.images, self.identity, self.expression))
            self.device = device
        return self

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx):
        if self.device is not None:
            idx = torch.as_tensor(idx, device=self.device)  # a slice of the device permutation: no copy
            return to_float(self.images[idx]), self.identity[idx], self.expression[idx]
        idx = np.asarray(idx, dtype=np.int64)
        t = torch.from_numpy(idx)
        return images_to_tensor(self._np[idx]), self.identity[t], self.expression[t]


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of one epoch: a fixed function of (seed, epoch)."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 0x5EED) % (2**63 - 1)


class EpochBatchSampler(Sampler):
    """Index batches of a permutation that depends only on (seed, epoch) (a plain, fixed order if not `shuffle`).

    `set_epoch(e)` (called by Lightning before every epoch) picks the permutation; without it, each complete
    pass moves on to the next epoch, like a RandomSampler with its own generator. `skip` batches of the next
    pass are left out (set by `ResumableLoader.load_state_dict` for a mid-epoch resume).

    With a `device` the batches are slices of the permutation copied to that device once per pass (index tensors
    for a `TensorBatches` kept there), else lists of ints.
    """

    def __init__(self, num_items: int, batch_size: int, drop_last: bool, shuffle: bool = True, seed: int = 0,
                 device: torch.device | None = None):
        self.num_items, self.batch_size, self.drop_last = int(num_items), int(batch_size), bool(drop_last)
        self.shuffle, self.seed = bool(shuffle), int(seed)
        self.device = device
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self.skip = 0  # a position saved in another epoch does not apply
        self.epoch = int(epoch)

    def __len__(self) -> int:
        full, rest = divmod(self.num_items, self.batch_size)
        return full if self.drop_last or not rest else full + 1

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of epoch `epoch` (int64, on the host: drawn by a CPU generator on every device)."""
        if not self.shuffle:
            return torch.arange(self.num_items)
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.num_items, generator=gen)

    def order(self, epoch: int) -> list[int]:
        return self.permutation(epoch).tolist()

    def __iter__(self):
        skip, self.skip = self.skip, 0
        epoch = self.epoch
        order = self.permutation(epoch).to(self.device) if self.device is not None else self.order(epoch)
        for b in range(skip, len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size]
        if self.epoch == epoch:
            self.epoch = epoch + 1  # a complete pass: the next one reshuffles unless set_epoch says otherwise


class ResumableLoader(DataLoader):
    """A DataLoader over an `EpochBatchSampler` whose position (epoch, batches handed out) goes into Lightning
    checkpoints: Lightning saves `state_dict()` of loaders that have one and calls `load_state_dict` on resume.

    Under DDP Lightning wraps the sampler (one batch in `world_size` per process); the position is then not
    kept, and a resume restarts the interrupted epoch's permutation (exact resume is single-process).
    """

    _position = 0

    def _epoch_sampler(self) -> EpochBatchSampler | None:
        return self.sampler if isinstance(self.sampler, EpochBatchSampler) else None

    def __iter__(self):
        sampler = self._epoch_sampler()
        self._position = sampler.skip if sampler is not None else 0
        for batch in super().__iter__():
            self._position += 1
            yield batch

    def state_dict(self) -> dict:
        sampler = self._epoch_sampler()
        return {} if sampler is None else {"epoch": sampler.epoch, "position": self._position}

    def load_state_dict(self, state: dict) -> None:
        sampler = self._epoch_sampler()
        if sampler is None or not state:
            return
        sampler.set_epoch(int(state.get("epoch", 0)))
        position = int(state.get("position", 0))
        sampler.skip = position if 0 < position < len(sampler) else 0
        self._position = sampler.skip


class FaceDataModule(pl.LightningDataModule):
    """The splits of `dataset_cfg` as Lightning loaders. `data_on_device` (`train.data_on_device`): True keeps the
    splits on the device of the Trainer's module (the CPU without a Trainer) and builds batches there, "auto" does
    so on CUDA in single-device runs (`pprl.runtime.speed.resolve_data_on_device`), False never."""

    def __init__(self, dataset_cfg, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 data_on_device: bool | str = False):
        super().__init__()
        self.dataset_cfg = dataset_cfg
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.data_on_device = data_on_device
        self.splits: FaceSplits | None = None
        self._train = self._test = self._val = None
        self._train_sampler: EpochBatchSampler | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = load_faces(self.dataset_cfg)
            self._train = TensorBatches(self.splits.train)
            self._test = TensorBatches(self.splits.test)
            # the GAN's monitoring reads the validation split when dataset.val_fraction carved one, else test
            self._val = TensorBatches(self.splits.val) if len(self.splits.val) else self._test

    def batch_device(self) -> torch.device | None:
        """The device batches are built on (the device path), or None (host batches, copied by Lightning)."""
        from pprl.runtime.speed import resolve_data_on_device

        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        world = trainer.world_size if trainer is not None else 1
        return device if resolve_data_on_device(self.data_on_device, device, world) else None

    def _loader(self, ds: TensorBatches, train: bool) -> DataLoader:
        device = self.batch_device()
        workers = self.num_workers if device is None else 0  # nothing for workers to do on the device path
        # the loader's own generator only seeds workers; it keeps iterator creation off the global RNG
        common = dict(batch_size=None, num_workers=workers, persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(self.seed))
        if device is not None:
            ds.to(device)
        if train:
            if self._train_sampler is None:  # one sampler for every train loader: a new permutation every epoch
                self._train_sampler = EpochBatchSampler(len(ds), self.batch_size, len(ds) >= self.batch_size,
                                                        shuffle=True, seed=self.seed)
            self._train_sampler.device = device
            return ResumableLoader(ds, sampler=self._train_sampler, **common)
        if device is not None:
            return DataLoader(ds, sampler=EpochBatchSampler(len(ds), self.batch_size, False, shuffle=False,
                                                            device=device), **common)
        return DataLoader(ds, sampler=BatchSampler(SequentialSampler(ds), self.batch_size, False), **common)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self._train, True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self._val, False)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self._test, False)
