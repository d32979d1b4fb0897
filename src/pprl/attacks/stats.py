"""Statistics of Table 2: confidence intervals of a CCR.

A row with one decision per test image gets a Wilson score interval. Attacks I, II and II-strong decide on all
N_id protected versions G(I, c) of every test image; those N_id decisions are not independent (one image's
versions share its pose, its expression's clarity, ...), so their interval comes from a cluster bootstrap over
the source images (`grouped_interval`), as if new test images (not new protected copies) were drawn.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion hits/n (95 % for the default z)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= hits <= n:
        raise ValueError(f"wilson_interval: hits={hits} must be in [0, n={n}]")
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


#: resamples of the cluster bootstrap (Table 2 rows that test several protected versions of one image)
BOOTSTRAP_RESAMPLES = 2000


def group_counts(hit: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hits per group, decisions per group) of boolean decisions `hit` that belong to `groups`."""
    _, index = np.unique(np.asarray(groups), return_inverse=True)
    return (np.bincount(index, weights=np.asarray(hit, np.float64)),
            np.bincount(index).astype(np.float64))


def cluster_bootstrap_interval(hits: np.ndarray, sizes: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                               seed: int = 0, level: float = 0.95, chunk: int = 200) -> tuple[float, float]:
    """Percentile interval of the pooled rate sum(hits) / sum(sizes) when whole groups (source images) are drawn
    with replacement: `resamples` seeded draws of G groups out of G, vectorised in chunks of `chunk` draws."""
    hits, sizes = np.asarray(hits, np.float64), np.asarray(sizes, np.float64)
    g = len(hits)
    if g == 0:
        return (0.0, 1.0)
    rng = np.random.default_rng(seed)
    rates = []
    for start in range(0, resamples, chunk):
        pick = rng.integers(0, g, (min(chunk, resamples - start), g))
        rates.append(hits[pick].sum(1) / sizes[pick].sum(1))
    alpha = (1 - level) / 2
    lo, hi = np.quantile(np.concatenate(rates), [alpha, 1 - alpha])
    return (float(lo), float(hi))


def design_effect(hits: np.ndarray, sizes: np.ndarray) -> float | None:
    """Variance of the pooled rate under resampling of groups (the cluster-robust, ratio-estimator variance) over
    the variance it would have if all decisions were independent; 1 = no correlation inside groups, up to the
    group size when all of a group's decisions agree, below 1 when groups are more alike than chance allows.
    None when either variance is 0 or there is a single group."""
    hits, sizes = np.asarray(hits, np.float64), np.asarray(sizes, np.float64)
    g, n = len(hits), sizes.sum()
    if g < 2 or n == 0:
        return None
    p = hits.sum() / n
    binomial = p * (1 - p) / n
    if binomial == 0:
        return None
    clustered = g / (g - 1) * float(((hits - p * sizes) ** 2).sum()) / n ** 2
    return clustered / binomial


def grouped_interval(hit: np.ndarray, groups: np.ndarray | None, seed: int = 0) -> tuple[tuple[float, float], dict]:
    """95 % interval of the rate of `hit` and how it was computed.

    One decision per group (or no groups): Wilson. Groups that repeat (the N_id protected versions of a test
    image): a cluster bootstrap over the groups (percentile, `BOOTSTRAP_RESAMPLES` seeded resamples), widened to
    the Wilson interval over all decisions where that is wider (a bootstrap over groups that all have the same
    rate has no spread, which does not make the rate exact)."""
    hit = np.asarray(hit, bool)
    wilson = wilson_interval(int(hit.sum()), len(hit))
    if groups is None or len(np.unique(groups)) == len(hit):
        return wilson, {"method": "wilson"}
    hits, sizes = group_counts(hit, groups)
    lo, hi = cluster_bootstrap_interval(hits, sizes, seed=seed)
    deff = design_effect(hits, sizes)
    info = {"method": "cluster_bootstrap", "groups": len(hits), "resamples": BOOTSTRAP_RESAMPLES,
            "design_effect": None if deff is None else round(deff, 3)}
    return (min(lo, wilson[0]), max(hi, wilson[1])), info
