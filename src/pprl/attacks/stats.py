"""Statistics of Table 2: confidence intervals of a CCR."""

from __future__ import annotations

import math

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
