"""The input images of a generative application and the labels named on its command line.

Inputs are image files (`task.inputs`), test-set indices (`task.indices`) or a seeded choice covering the
expressions and identities of the test split; identity and expression names (or indices) given in `task.*`
are resolved against the model, with an error naming the choices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from pprl.datasets.labels import resolve_label
from pprl.runtime.errors import ConfigError, MissingFileError

from .context import Context


@dataclass
class Inputs:
    """Chosen input images with their labels (-1 where unknown, e.g. image files) and a description each."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    identity: np.ndarray  # int64, -1 = unknown
    expression: np.ndarray  # int64, -1 = unknown
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)


def read_images(paths: Sequence[str | os.PathLike], size: int) -> np.ndarray:
    """Image files (any mode) -> uint8 (N, size, size, 3) RGB; a missing or unreadable file is named."""
    out = []
    for p in paths:
        path = Path(str(p)).expanduser()
        if not path.is_file():
            raise MissingFileError(f"task.inputs: image {str(p)!r} does not exist ({path.resolve()})")
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.LANCZOS)
                out.append(np.asarray(im, dtype=np.uint8))
        except OSError as exc:
            raise ConfigError(f"task.inputs: cannot read image {str(p)!r}: {exc}") from exc
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def describe(ctx: Context, split: str, idx: int, identity: int, expression: int) -> str:
    """How an input is named in figures and scores.json: `test[12] ava/joy`."""
    return f"{split}[{idx}] {ctx.identities[identity]}/{ctx.expressions[expression]}"


def test_inputs(ctx: Context, idx: Sequence[int], key: str = "task.indices") -> Inputs:
    """Test-set images at `idx` (each checked against the test-set size)."""
    test = ctx.splits.test
    idx = [int(i) for i in idx]
    bad = [i for i in idx if not 0 <= i < len(test)]
    if bad:
        raise ConfigError(f"{key}: {bad} out of range; the test split has {len(test)} images (0..{len(test) - 1})")
    sub = test.subset(np.asarray(idx, np.int64))
    names = [describe(ctx, "test", i, a, b) for i, a, b in zip(idx, sub.identity, sub.expression)]
    return Inputs(sub.images, sub.identity.copy(), sub.expression.copy(), names)


def file_inputs(ctx: Context, paths: Sequence[str]) -> Inputs:
    """Image files resized to the model's size, with unknown labels."""
    images = read_images(paths, ctx.image_size)
    unknown = np.full(len(images), -1, np.int64)
    return Inputs(images, unknown, unknown.copy(), [Path(str(p)).name for p in paths])


def covering_choice(identity: np.ndarray, expression: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
    """`num` distinct indices: the expressions present take turns (seeded order), and so do the identities."""
    expr_order, id_order = rng.permutation(np.unique(expression)), rng.permutation(np.unique(identity))
    picks: list[int] = []
    for k in range(min(num, len(identity))):
        e, i = expr_order[k % len(expr_order)], id_order[k % len(id_order)]
        for cond in ((expression == e) & (identity == i), expression == e, np.ones(len(identity), bool)):
            match = np.setdiff1d(np.flatnonzero(cond), picks)
            if len(match):
                picks.append(int(rng.choice(match)))
                break
    return np.asarray(picks, np.int64)


def choose_inputs(ctx: Context, num: int, pool: np.ndarray | None = None) -> Inputs:
    """`task.inputs` (files), else `task.indices` (test set), else a seeded choice from `pool` (test indices)."""
    task = ctx.task
    if task.get("inputs"):
        return file_inputs(ctx, list(task.inputs))
    if task.get("indices") is not None and len(task.indices):
        return test_inputs(ctx, list(task.indices))
    test = ctx.splits.test
    pool = np.arange(len(test)) if pool is None else np.asarray(pool, np.int64)
    local = covering_choice(test.identity[pool], test.expression[pool], num, ctx.rng(f"inputs/{task.name}"))
    return test_inputs(ctx, pool[local].tolist())


def resolve_identity(value: Any, names: Sequence[str], key: str = "task.identities") -> int:
    """An identity name (or index) -> its index in the model."""
    return resolve_label(value, names, key, "identity")


def resolve_expression(value: Any, names: Sequence[str], key: str) -> int:
    """An expression name (or index) -> its index in the model."""
    return resolve_label(value, names, key, "expression")


def target_identities(ctx: Context) -> list[int]:
    """`task.identities` as indices (default: every identity code of the model)."""
    chosen = ctx.task.get("identities")
    if not chosen:
        return list(range(len(ctx.identities)))
    return [resolve_identity(v, ctx.identities) for v in chosen]


def fill_unknown_identity(ctx: Context, inputs: Inputs, images: np.ndarray | None = None) -> list[str]:
    """Give file inputs an identity: `task.identities` (one, or one per input) or the reference identifier's guess.

    Returns how each identity was obtained ("label", "task.identities" or "predicted").
    """
    unknown = np.flatnonzero(inputs.identity < 0)
    how = ["label"] * len(inputs)
    if not len(unknown):
        return how
    given = ctx.task.get("identities")
    if given:
        ids = [resolve_identity(v, ctx.identities) for v in given]
        if len(ids) not in (1, len(unknown)):
            raise ConfigError(f"task.identities: give one identity or one per image input ({len(unknown)}), "
                             f"got {len(ids)}")
        for k, j in enumerate(unknown):
            inputs.identity[j] = ids[0] if len(ids) == 1 else ids[k]
            how[j] = "task.identities"
        return how
    pred = ctx.refs.identity_probs(inputs.images[unknown] if images is None else images[unknown]).argmax(1)
    for j, p in zip(unknown, pred):
        inputs.identity[j] = int(p)
        how[j] = "predicted"
    return how
