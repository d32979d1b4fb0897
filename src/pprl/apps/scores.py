"""The scores of the generative applications (accuracy, entropy, Spearman's rho, pixel L1) and `scores.json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from omegaconf import OmegaConf

from pprl.runtime.imageio import atomic_path

from .context import Context


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """Fraction of rows whose argmax equals the label (None for no rows)."""
    if len(labels) == 0:
        return None
    return float(np.mean(np.asarray(probs).argmax(1) == np.asarray(labels)))


def entropy(counts: np.ndarray) -> float:
    """Shannon entropy (nats) of a histogram."""
    p = np.asarray(counts, np.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum()) + 0.0


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank."""
    a = np.asarray(a, np.float64)
    ranks = np.empty(len(a))
    ranks[np.argsort(a, kind="mergesort")] = np.arange(len(a))
    _, inv = np.unique(a, return_inverse=True)
    return (np.bincount(inv, ranks) / np.bincount(inv))[inv]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation rho (Pearson on average ranks); NaN when either side is constant."""
    rx, ry = _ranks(np.asarray(x)), _ranks(np.asarray(y))
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def l1(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-image mean absolute pixel difference on the [0, 1] scale (inside `mask` (H, W) when given)."""
    d = np.abs(a.astype(np.float32) - b.astype(np.float32)) / 255.0
    if mask is not None:
        return d[:, mask].mean(axis=(1, 2))
    return d.mean(axis=(1, 2, 3))


def write_scores(ctx: Context, scores: dict, figures: Sequence[Path], inputs: dict | None = None) -> dict:
    """`<out_dir>/scores.json`: task, run, seed, reference-classifier quality, inputs, scores
    and figure names; written atomically."""
    doc = {"task": str(ctx.task.name), "run_dir": str(ctx.run_dir), "checkpoint": str(ctx.checkpoint),
           "seed": ctx.seed, "reference": ctx.refs.summary(), "inputs": inputs or {},
           "scores": scores, "figures": [Path(p).name for p in figures],
           "task_config": OmegaConf.to_container(ctx.task, resolve=True)}
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(ctx.out_dir / "scores.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=2, allow_nan=False))
    return doc
