"""The thumbs-up rate per version over time with Wilson 95% intervals, and the served rate (every
version together: what users got, the curve `python -m bench.live_loop` reports), as SVG geometry
for a template (server-rendered: no script, nothing fetched)."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..ledger import ThumbTally

Z95 = 1.959964
BUCKETS = (86400, 3600, 300, 60)  # coarsest first: the first one that gives enough points wins
MIN_POINTS = 4
SERVED_COLOUR = "#111827"
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f", "#be185d")
WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 36


def wilson(ups: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of an up-rate of `ups` in `n`."""
    if n <= 0:
        return 0.0, 1.0
    p = ups / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(slots=True)
class Rate:
    version: int | None
    ups: int
    total: int
    low: float
    high: float

    @property
    def rate(self) -> float:
        return self.ups / self.total if self.total else 0.0


def rates(tallies: Iterable[ThumbTally]) -> dict[int | None, Rate]:
    """Whole-history up-rate per version."""
    ups: dict[int | None, int] = defaultdict(int)
    totals: dict[int | None, int] = defaultdict(int)
    for t in tallies:
        ups[t.version] += t.ups
        totals[t.version] += t.total
    return {v: Rate(v, ups[v], totals[v], *wilson(ups[v], totals[v])) for v in sorted(totals, key=lambda v: v or 0)}


@dataclass(slots=True)
class Point:
    x: float
    y: float
    y_low: float
    y_high: float
    title: str


@dataclass(slots=True)
class Series:
    version: int | None
    colour: str
    points: list[Point] = field(default_factory=list)

    @property
    def path(self) -> str:
        return " ".join(f"{'M' if i == 0 else 'L'}{p.x:.1f},{p.y:.1f}" for i, p in enumerate(self.points))

    @property
    def band(self) -> str:
        """The interval as one closed area: along the upper ends, back along the lower ones."""
        upper = [f"{p.x:.1f},{p.y_high:.1f}" for p in self.points]
        lower = [f"{p.x:.1f},{p.y_low:.1f}" for p in reversed(self.points)]
        return "M" + " L".join(upper + lower) + " Z"


@dataclass(slots=True)
class Plot:
    series: list[Series]
    served: Series  # every version together, per bucket
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    bucket: int
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM

    @property
    def bucket_label(self) -> str:
        return {86400: "day", 3600: "hour", 300: "5 minutes", 60: "minute"}.get(self.bucket, f"{self.bucket} s")


def _stamp(ts: float, bucket: int) -> str:
    t = dt.datetime.fromtimestamp(ts, dt.UTC)
    return t.strftime("%m-%d") if bucket >= 86400 else t.strftime("%m-%d %H:%M")


def build(tallies: list[ThumbTally], bucket: int) -> Plot | None:
    if not tallies:
        return None
    starts = sorted({t.start for t in tallies})
    t0, t1 = starts[0], starts[-1] + bucket
    span = max(t1 - t0, 1e-9)

    def x(ts: float) -> float:
        return LEFT + (ts - t0) / span * (WIDTH - LEFT - RIGHT)

    def y(rate: float) -> float:
        return TOP + (1 - rate) * (HEIGHT - TOP - BOTTOM)

    versions = sorted({t.version or 0 for t in tallies})
    dodge = {v: (i - (len(versions) - 1) / 2) * 6 for i, v in enumerate(versions)}  # side by side in one bucket
    by_version: dict[int | None, Series] = {}
    for t in tallies:
        series = by_version.get(t.version)
        if series is None:
            colour = PALETTE[versions.index(t.version or 0) % len(PALETTE)]
            series = by_version[t.version] = Series(t.version, colour)
        low, high = wilson(t.ups, t.total)
        rate = t.ups / t.total if t.total else 0.0
        title = f"v{t.version} {_stamp(t.start, bucket)}: {t.ups}/{t.total} up = {rate:.2f} (95%: {low:.2f}-{high:.2f})"
        series.points.append(Point(x(t.start + bucket / 2) + dodge[t.version or 0], y(rate), y(low), y(high), title))
    served = Series(None, SERVED_COLOUR)
    for start in starts:
        ups = sum(t.ups for t in tallies if t.start == start)
        total = sum(t.total for t in tallies if t.start == start)
        low, high = wilson(ups, total)
        rate = ups / total if total else 0.0
        title = f"served {_stamp(start, bucket)}: {ups}/{total} up = {rate:.2f} (95%: {low:.2f}-{high:.2f})"
        served.points.append(Point(x(start + bucket / 2), y(rate), y(low), y(high), title))
    count = min(len(starts), 6)
    ticks = [starts[round(i * (len(starts) - 1) / max(count - 1, 1))] for i in range(count)]
    x_ticks = [(x(s + bucket / 2), _stamp(s, bucket)) for s in dict.fromkeys(ticks)]
    y_ticks = [(y(v), f"{v:.2f}") for v in (0.0, 0.25, 0.5, 0.75, 1.0)]
    return Plot(sorted(by_version.values(), key=lambda s: s.version or 0), served, x_ticks, y_ticks, bucket)
