"""Train/test split (paper §5.1): per (identity, expression) group, 85 % train / 15 % test.

"We randomly selected (without replacement) 85% images of each expression from each
subject for the training set. The remaining 15% of images were used as testing data."
`leave_out` pairs (paper §5.5, "Face Image Synthesis for Left-Out Expression") are
removed from train and stay in test.

Real portrait sets are often one image per identity and condition (15 people x 11 conditions, say): every
(identity, expression) group then holds one image and a per-group split would leave the test set empty. When no
group holds two images, the split (and the validation carve) is drawn within each identity instead, with the same
counts per identity (`strata`); expressions then fall to train or test by the seeded draw.

Beyond the paper, `dataset.val_fraction` (default 0: none) carves a validation split out of the training images,
per (identity, expression) group, with its own seeded draw (train and test stay what they are without it, minus
the carved images): the GAN's monitoring and the sweep report's model selection use it, so that nothing is chosen
on the test images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pprl.runtime.errors import ConfigError

from .labels import resolve_label


@dataclass
class FaceSet:
    """One split: uint8 RGB images (N, H, W, 3) with int64 identity/expression labels."""

    images: np.ndarray
    identity: np.ndarray
    expression: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> "FaceSet":
        return FaceSet(self.images[idx], self.identity[idx], self.expression[idx])


@dataclass
class FaceSplits:
    train: FaceSet
    test: FaceSet
    identities: list[str]
    expressions: list[str]
    skipped: list[str] = field(default_factory=list)
    left_out: list[tuple[int, int]] = field(default_factory=list)
    image_size: int = 64
    val: FaceSet | None = None  # carved from train by dataset.val_fraction; empty (never None) after __post_init__

    def __post_init__(self) -> None:
        if self.val is None:
            self.val = self.train.subset(np.zeros(0, np.int64))

    @property
    def num_identities(self) -> int:
        return len(self.identities)

    @property
    def num_expressions(self) -> int:
        return len(self.expressions)


def resolve_leave_out(leave_out, identities: list[str], expressions: list[str]) -> list[tuple[int, int]]:
    """[[identity, expression], …] (names or indices) -> sorted unique index pairs."""
    pairs = set()
    for pair in leave_out or []:
        pair = list(pair)
        if len(pair) != 2:
            raise ConfigError(f"dataset.leave_out: each element must be [identity, expression], got {pair!r}")
        pairs.add((resolve_label(pair[0], identities, "dataset.leave_out", "identity", context=pair),
                   resolve_label(pair[1], expressions, "dataset.leave_out", "expression", context=pair)))
    return sorted(pairs)


def strata(identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
    """The group of each image the split stratifies by: its (identity, expression) pair, or its identity alone
    when no such pair holds two images (see the module docstring)."""
    pairs = identity.astype(np.int64) * (int(expression.max(initial=0)) + 1) + expression
    if len(pairs) and np.unique(pairs, return_counts=True)[1].max() < 2:
        return identity.astype(np.int64)
    return pairs


def split_indices(identity: np.ndarray, expression: np.ndarray, train_fraction: float, seed: int):
    """Stratified, disjoint, seeded split -> (train_idx, test_idx), both sorted.

    Each group (`strata`) with n >= 2 images gets max(1, min(n-1, round((1-f) n))) test images.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    groups = strata(identity, expression)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        idx = idx[rng.permutation(len(idx))]
        n_test = 0 if len(idx) < 2 else max(1, min(len(idx) - 1, round((1 - train_fraction) * len(idx))))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)  # noqa: E731
    return cat(train), cat(test)


def carve_validation(identity: np.ndarray, expression: np.ndarray, train_idx: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx), both sorted: `fraction` of every group (`strata` of the whole set) of `train_idx` (at
    least one image of a group with >= 2 when fraction > 0, never the whole group) goes to validation. The draw
    has its own seeded stream, so the test split does not depend on it."""
    if fraction <= 0 or not len(train_idx):
        return train_idx, np.zeros(0, np.int64)
    rng = np.random.default_rng([int(seed), 0x7A11])
    groups = strata(identity, expression)[train_idx]
    val = []
    for g in np.unique(groups):
        members = train_idx[groups == g]
        if len(members) >= 2:
            k = max(1, min(len(members) - 1, round(fraction * len(members))))
            val.append(rng.permutation(members)[:k])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    return np.setdiff1d(train_idx, val_idx), val_idx


def make_splits(images, identity, expression, identities, expressions, *, train_fraction=0.85, seed=0,
                leave_out=(), skipped=(), image_size=64, val_fraction=0.0) -> FaceSplits:
    left_out = resolve_leave_out(leave_out, identities, expressions)
    tr, te = split_indices(identity, expression, train_fraction, seed)
    for i, e in left_out:
        tr = tr[~((identity[tr] == i) & (expression[tr] == e))]
    tr, va = carve_validation(identity, expression, tr, float(val_fraction), seed)
    full = FaceSet(images, identity.astype(np.int64), expression.astype(np.int64))
    return FaceSplits(full.subset(tr), full.subset(te), list(identities), list(expressions), list(skipped),
                      left_out, image_size, val=full.subset(va))
