"""Built-in FERG-like data set: procedurally drawn cartoon faces (`pprl.datasets.cartoon` draws them).

FERG-DB (paper §5.1) holds six cartoon characters × seven expressions
(anger, disgust, fear, joy, neutral, sadness, surprise). It is licensed and must be
obtained from its authors, so this source draws a stand-in: six characters whose identity
and expression are the only label-bearing factors.

Every image is deterministic given (seed, identity, expression, index), so large sets are drawn by several
processes (`render_workers`) with the same result. `group_counts` gives every (identity, expression) group its own
size: `experiment=ferg_scale` uses FERG-DB's (55,767 images at 64 px, see conf/experiment/ferg_scale.yaml).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from pprl.runtime.errors import ConfigError

from .cartoon import CODE_VERSION, EXPRESSIONS, identity_names, render_face
from .registry import dataset_source

CHUNK = 256              # images per task of a parallel build
PARALLEL_FROM = 10_000   # render_workers=0 draws sets of this many images or more in one process per CPU


def group_sizes(num_identities: int, images_per_group: int, group_counts=None) -> np.ndarray:
    """(num_identities, 7) int64 images per (identity, expression): `group_counts` ([[per expression] per
    identity]) when given, else `images_per_group` everywhere."""
    if group_counts is None:
        return np.full((num_identities, len(EXPRESSIONS)), int(images_per_group), np.int64)
    counts = np.asarray(group_counts)
    if counts.shape != (num_identities, len(EXPRESSIONS)) or counts.dtype.kind not in "iu" or counts.min() < 1:
        raise ConfigError(f"dataset.group_counts: must be {num_identities} lists (dataset.num_identities) of "
                         f"{len(EXPRESSIONS)} integers >= 1 (one per expression: {', '.join(EXPRESSIONS)})")
    return counts.astype(np.int64)


def _render_chunk(task: tuple[int, int, int, int, int, int]) -> np.ndarray:
    identity, expression, first, stop, image_size, seed = task
    return np.stack([render_face(identity, expression, m, image_size, seed) for m in range(first, stop)])


def render_set(num_identities: int, images_per_group: int, image_size: int, seed: int, progress: bool = False,
               group_counts=None, workers: int = 1):
    """All images, ordered identity-major, then expression, then index; `workers` > 1 draws them in that many
    processes (same images).

    Returns (images uint8 (N, H, W, 3), identity int64 (N,), expression int64 (N,)).
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from tqdm import tqdm

    counts = group_sizes(num_identities, images_per_group, group_counts)
    n = int(counts.sum())
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    ident = np.repeat(np.arange(num_identities).repeat(len(EXPRESSIONS)), counts.ravel())
    expr = np.repeat(np.tile(np.arange(len(EXPRESSIONS)), num_identities), counts.ravel())
    tasks = [(i, j, first, min(first + CHUNK, int(counts[i, j])), image_size, seed)
             for i in range(num_identities) for j in range(len(EXPRESSIONS))
             for first in range(0, int(counts[i, j]), CHUNK)]
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 1 else None
    k = 0
    with tqdm(total=n, desc="pprl: drawing synthetic faces", disable=not progress, leave=False) as bar:
        try:
            for chunk in (pool.map(_render_chunk, tasks) if pool is not None else map(_render_chunk, tasks)):
                images[k:k + len(chunk)] = chunk
                k += len(chunk)
                bar.update(len(chunk))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return images, ident, expr


def render_workers(setting: int, num_images: int) -> int:
    """Processes for drawing `num_images` (`dataset.render_workers`; 0: one per usable CPU from `PARALLEL_FROM`
    images on, else 1)."""
    if setting:
        return int(setting)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cpus if num_images >= PARALLEL_FROM else 1


@dataset_source("synthetic", needs_root=False, layout="(drawn, no files)",
                labels=lambda cfg: (identity_names(cfg["num_identities"]) if isinstance(cfg["num_identities"], int)
                                    and cfg["num_identities"] > 0 else None, list(EXPRESSIONS)))
def load(cfg: dict):
    """(arrays, meta) for the `synthetic` source, built once into the cache."""
    from .cache import cached

    n_id, per = int(cfg["num_identities"]), int(cfg["images_per_group"])
    size, rseed = int(cfg["image_size"]), int(cfg["render_seed"])
    if n_id < 1 or per < 1:
        raise ConfigError(f"dataset.num_identities and dataset.images_per_group must be >= 1, got {n_id}, {per}")
    group_counts = cfg.get("group_counts")
    counts = group_sizes(n_id, per, group_counts)
    workers = render_workers(int(cfg.get("render_workers") or 0), int(counts.sum()))

    def build():
        images, ident, expr = render_set(n_id, per, size, rseed, progress=True, group_counts=group_counts,
                                         workers=workers)
        meta = dict(identities=identity_names(n_id), expressions=list(EXPRESSIONS), skipped=[])
        return dict(images=images, identity=ident, expression=expr), meta

    key = dict(source="synthetic", version=CODE_VERSION, num_identities=n_id, images_per_group=per,
               image_size=size, render_seed=rseed)
    if group_counts is not None:  # (the key of an even set stays what it was: its cache is still found)
        key = dict(key, images_per_group=None, group_counts=counts.tolist())
    return cached("synthetic", key, build, bool(cfg["cache"]))


def write_tree(root, identities, images_per_group: int, image_size: int = 32, seed: int = 0,
               progress: bool = False) -> int:
    """Draw characters `identities` (indices; 0-5 are the built-in set's, 6+ generic random characters) as a
    `root/<identity>/<expression>/<index>.png` tree, the layout `dataset=folder` reads. Returns the image count.

    Gives labelled cartoon faces *other* than the built-in set (e.g. identities 6-11, another `seed`), to check
    that a result is not specific to the six built-in characters.
    """
    from pathlib import Path

    from tqdm import tqdm

    root = Path(root)
    identities = list(identities)
    if not identities or min(identities) < 0 or images_per_group < 1:
        raise ConfigError("write_tree: need identities >= 0 and images_per_group >= 1")
    names = identity_names(max(identities) + 1)
    total = len(identities) * len(EXPRESSIONS) * images_per_group
    with tqdm(total=total, desc=f"pprl: writing {root}", disable=not progress) as bar:
        for i in identities:
            for j, expression in enumerate(EXPRESSIONS):
                folder = root / names[i] / expression
                folder.mkdir(parents=True, exist_ok=True)
                for m in range(images_per_group):
                    Image.fromarray(render_face(i, j, m, image_size, seed)).save(folder / f"{m:04d}.png")
                bar.update(images_per_group)
    return total


def parse_identities(spec) -> list[int]:
    """Character indices from 'a-b' (a range, both ends included), 'a,b,c' or a single index."""
    text = str(spec).strip()
    try:
        if "-" in text:
            first, last = (int(v) for v in text.split("-"))
            return list(range(first, last + 1))
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"identities={spec!r}: use 'a-b' (e.g. 6-11) or 'a,b,c' (e.g. 0,2,4)") from None
