"""Interval estimates the compiler's decisions share (judge trust, the gate's regenerate bound)."""

from __future__ import annotations

import math


def wilson_lower(wins: int, n: int, z: float = 1.96) -> float:
    """Lower end of the Wilson score interval for a proportion (95% by default)."""
    if n == 0:
        return 0.0
    p = wins / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))
