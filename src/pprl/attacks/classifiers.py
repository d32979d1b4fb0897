"""The attackers' classifiers (paper §5.4) and their training loop.

- `ImageClassifier`: the structure of D2 / D3 (Table 1): the discriminator trunk (four 5x5 stride-2 convs
  with BNorm + LeakyReLU, then FC 256 + LeakyReLU) and one linear head, trained from scratch.
- `MLPClassifier`: attack III's "customized ANN" on f(I): 3 hidden layers of 256 units.

`fit_classifier` trains either with Adam on a training slice and selects the epoch with the best accuracy
on a validation slice of the *attacker's own training data* (never the test images), stopping early when
validation stops improving. Inputs stay uint8 images (N, H, W, 3) or float features (N, d) in numpy and are
turned into float tensors one batch at a time; on a GPU with room for them (`on_device`, `pprl.data.device`) they
are copied to the device once and every batch is gathered there, with no host sync per batch.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from pprl.runtime.pixels import images_to_tensor
from pprl.runtime.pixels import place_rows, row_index, to_float
from pprl.runtime.errors import ConfigError
from pprl.model.nets import Discriminator, LatentClassifier

log = logging.getLogger("pprl.attacks")


@dataclass
class FitSettings:
    """How an attacker trains one classifier: one block of `conf/attack/*.yaml` (every key comes from the YAML)."""

    epochs: int            # at most
    lr: float              # Adam
    batch_size: int
    val_fraction: float    # the attacker's validation slice (model selection; never test images)
    patience: int          # epochs without a higher validation accuracy before stopping
    target_val_acc: float  # stop as soon as validation accuracy reaches this
    weight_decay: float    # Adam's L2 penalty
    epoch_fraction: float  # share of the training rows one "epoch" visits (large expanded sets)
    schedule: str          # learning rate over the `epochs` budget: cosine (decays to 0) | constant

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str) -> "FitSettings":
        """Read the settings from `cfg`; ConfigError naming every missing or bad `where.<key>`, one line each."""
        missing = [k for k in cls.__dataclass_fields__ if cfg.get(k) is None]
        if missing:
            raise ConfigError("invalid attack config:\n  " + "\n  ".join(
                f"{where}.{k}: missing (see conf/attack/)" for k in missing))
        s = cls(**{k: cfg[k] for k in cls.__dataclass_fields__})
        problems = []
        if not isinstance(s.epochs, int) or s.epochs < 1:
            problems.append(f"{where}.epochs={s.epochs!r}: must be an integer >= 1")
        if not s.lr > 0:
            problems.append(f"{where}.lr={s.lr!r}: must be > 0")
        if not isinstance(s.batch_size, int) or s.batch_size < 2:
            problems.append(f"{where}.batch_size={s.batch_size!r}: must be an integer >= 2")
        if not 0 <= s.val_fraction < 1:
            problems.append(f"{where}.val_fraction={s.val_fraction!r}: must be in [0, 1)")
        if not isinstance(s.patience, int) or s.patience < 1:
            problems.append(f"{where}.patience={s.patience!r}: must be an integer >= 1")
        if s.schedule not in ("cosine", "constant"):
            problems.append(f"{where}.schedule={s.schedule!r}: allowed values are cosine, constant")
        if not 0 < s.epoch_fraction <= 1:
            problems.append(f"{where}.epoch_fraction={s.epoch_fraction!r}: must be in (0, 1]")
        if not s.weight_decay >= 0:
            problems.append(f"{where}.weight_decay={s.weight_decay!r}: must be >= 0")
        if problems:
            raise ConfigError("invalid attack config:\n  " + "\n  ".join(problems))
        return s


class ImageClassifier(nn.Module):
    """D2 / D3 alone (Table 1): the discriminator's trunk (4 convs + FC `hidden`) and one N-way head."""

    def __init__(self, image_size: int, width: int, num_classes: int, hidden: int = 256):
        super().__init__()
        # the very trunk of pprl.model.nets.Discriminator (its real/fake, identity and expression heads are dropped)
        self.trunk = Discriminator(image_size, width, num_identities=1, num_expressions=1, hidden=hidden).trunk
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class MLPClassifier(nn.Module):
    """Attack III's ANN (paper §5.4) on f(I): `pprl.model.nets.LatentClassifier` (3 hidden layers of 256) fed with
    features standardised by `mean` / `std` (fitted on the attacker's training slice, stored as buffers)."""

    def __init__(self, in_dim: int, num_classes: int, hidden: Sequence[int] = (256, 256, 256),
                 mean: np.ndarray | None = None, std: np.ndarray | None = None):
        super().__init__()
        self.mlp = LatentClassifier(in_dim, num_classes, tuple(int(h) for h in hidden))
        self.register_buffer("mean", torch.as_tensor(np.zeros(in_dim) if mean is None else mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.ones(in_dim) if std is None else std, dtype=torch.float32))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.mlp((f - self.mean) / self.std)


def validation_split(groups: np.ndarray, strata: np.ndarray, fraction: float, seed: int):
    """(train_rows, val_rows): a seeded `fraction` of the *groups* of every stratum goes to validation.

    Rows of one group (e.g. the N_id protected versions of one source image) never straddle the split;
    each stratum (e.g. an identity x expression pair) with >= 2 groups keeps at least one in training.
    """
    groups, strata = np.asarray(groups), np.asarray(strata)
    if fraction <= 0:
        return np.arange(len(groups)), np.empty(0, dtype=np.int64)
    uniq, first = np.unique(groups, return_index=True)
    group_stratum = strata[first]
    rng = np.random.default_rng(seed)
    val_groups = []
    for s in np.unique(group_stratum):
        members = uniq[group_stratum == s]
        if len(members) < 2:
            continue
        k = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        val_groups.append(rng.permutation(members)[:k])
    is_val = np.isin(groups, np.concatenate(val_groups)) if val_groups else np.zeros(len(groups), bool)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def as_batch(inputs: np.ndarray | torch.Tensor, rows) -> torch.Tensor:
    """Float tensor of `inputs[rows]`: uint8 images -> (B, 3, H, W) in [-1, 1]; features -> (B, d) float32.
    `inputs` on a device (`place_rows`) take `rows` as an index tensor there and give the batch there."""
    chunk = inputs[rows]
    if isinstance(chunk, torch.Tensor):
        return to_float(chunk) if chunk.dtype == torch.uint8 else chunk.float()
    if chunk.dtype == np.uint8:
        return images_to_tensor(chunk)
    return torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))


@torch.inference_mode()
def predict(net: nn.Module, inputs: np.ndarray | torch.Tensor, rows: np.ndarray | None = None,
            batch_size: int = 512, device: torch.device | str = "cpu", labels: np.ndarray | None = None,
            desc: str | None = None, on_device: bool | None = None):
    """Predicted classes of `inputs[rows]` (all rows by default); with `labels` also the mean cross-entropy.
    Results reach the host once, at the end (`on_device`: the inputs go to `device` once, see `place_rows`)."""
    rows = np.arange(len(inputs)) if rows is None else np.asarray(rows)
    source = place_rows(inputs, device, on_device)
    index = row_index(rows, source)
    targets = torch.from_numpy(np.asarray(labels, np.int64)).to(device) if labels is not None else None
    net.eval()
    preds, loss = [], torch.zeros((), dtype=torch.float64, device=device)
    starts = range(0, len(rows), batch_size)
    for start in (tqdm(starts, desc=desc, unit="batch", leave=False, disable=None) if desc else starts):
        idx = index[start:start + batch_size]
        logits = net(as_batch(source, idx).to(device))
        preds.append(logits.argmax(1))
        if targets is not None:
            loss += F.cross_entropy(logits, targets[idx], reduction="sum").double()
    pred = torch.cat(preds).cpu().numpy() if preds else np.empty(0, np.int64)
    return (pred, float(loss) / max(len(rows), 1)) if labels is not None else pred


def _batch_stream(rows: np.ndarray, batch_size: int, rng: np.random.Generator, device: torch.device | None = None):
    """Endless whole batches of `rows`: shuffled passes, the last partial batch of each pass dropped; with a
    `device`, index tensors there (each pass's order copied once)."""
    while True:
        order = rng.permutation(rows)
        if device is not None:
            order = torch.from_numpy(order).to(device)
        for b in range(len(order) // batch_size):
            yield order[b * batch_size:(b + 1) * batch_size]


@dataclass
class FitReport:
    """What training an attacker's classifier did: epochs run, the selected epoch, its validation accuracy."""

    epochs_run: int = 0
    best_epoch: int = 0
    val_acc: float | None = None
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
                "val_acc": None if self.val_acc is None else round(self.val_acc, 6), "seconds": round(self.seconds, 2)}


def fit_classifier(net: nn.Module, inputs: np.ndarray, labels: np.ndarray, train_rows: np.ndarray,
                   val_rows: np.ndarray, settings: FitSettings, seed: int = 0,
                   device: torch.device | str = "cpu", desc: str = "fit", on_device: bool | None = None) -> FitReport:
    """Train `net` (cross-entropy, Adam) on `inputs[train_rows]`; keep the weights of the best validation epoch.

    Without validation rows every epoch is run and the last weights are kept. `on_device`: keep the inputs on
    `device` (copied once; None: on a CUDA device with room for them); the host waits for the device only at
    epoch ends either way.
    """
    start_time = time.time()
    net.to(device)
    source = place_rows(inputs, device, on_device)
    labels_t = torch.from_numpy(np.asarray(labels, np.int64)).to(device)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    if len(train_rows) < 2:
        raise ValueError(f"{desc}: needs at least 2 training samples, got {len(train_rows)}")
    bs = min(settings.batch_size, len(train_rows))
    # whole batches only (BatchNorm needs > 1 sample); an epoch may visit only `epoch_fraction` of the rows,
    # consecutive epochs continue through the same shuffled order before reshuffling
    n_batches = max(int(round(settings.epoch_fraction * len(train_rows))) // bs, 1)
    stream = _batch_stream(train_rows, bs, rng, source.device if isinstance(source, torch.Tensor) else None)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.epochs * n_batches)
             if settings.schedule == "cosine" else None)
    report = FitReport()
    best_key, best_state, stale = None, None, 0
    bar = tqdm(total=settings.epochs * n_batches, desc=desc, unit="batch", leave=False, disable=None)
    try:
        for epoch in range(1, settings.epochs + 1):
            net.train()
            total = torch.zeros((), dtype=torch.float64, device=device)  # summed in float64, as floats were
            for _ in range(n_batches):
                idx = next(stream)
                logits = net(as_batch(source, idx).to(device))
                loss = F.cross_entropy(logits, labels_t[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                total += loss.detach().double()
                bar.update(1)
            entry = {"epoch": epoch, "train_loss": float(total) / n_batches}
            report.epochs_run = epoch
            if len(val_rows):
                pred, val_loss = predict(net, source, val_rows, device=device, labels=labels)
                acc = float((pred == labels[val_rows]).mean())
                entry.update(val_acc=acc, val_loss=val_loss)
                # keep the best (accuracy, then loss) weights; only a higher accuracy counts as progress
                stale = 0 if best_key is None or acc > best_key[0] else stale + 1
                key = (acc, -val_loss)
                if best_key is None or key > best_key:
                    best_key = key
                    best_state = copy.deepcopy(net.state_dict())
                    report.best_epoch, report.val_acc = epoch, acc
                bar.set_postfix(val_acc=f"{acc:.3f}")
            report.history.append(entry)
            log.info("%s: epoch %d/%d, train loss %.4f%s", desc, epoch, settings.epochs, entry["train_loss"],
                     f", val acc {entry['val_acc']:.4f}, val loss {entry['val_loss']:.4f}" if "val_acc" in entry else "")
            if best_key is not None and (best_key[0] >= settings.target_val_acc or stale >= settings.patience):
                break
    finally:
        bar.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    else:
        report.best_epoch = report.epochs_run
    net.eval()
    report.seconds = time.time() - start_time
    return report
