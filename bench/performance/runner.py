"""The measurement matrix: every (streaming, rate) point against every target, interleaved.

Why interleave (direct, speclearn, LiteLLM at one point, then the next point) rather than one
target after another: on a shared machine the background load drifts over minutes; interleaving
puts that drift into all three targets alike, so the ratios between them stay meaningful.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.performance import loadgen
from bench.performance.procs import Managed
from bench.performance.targets import Target
from bench.stats import Recorder


@dataclass(frozen=True)
class Plan:
    rates: list[float]
    streams: list[bool]
    duration_s: float
    warmup_s: float
    saturation_s: float  # 0 skips the closed-loop saturation runs
    concurrency: int
    max_inflight: int
    drain_s: float
    timeout_s: float
    max_tokens: int
    settle_s: float = 0.3  # pause between points so a saturated target recovers


class Meter:
    """CPU, RSS and mock counters around one load run, charged to the right process tree."""

    def __init__(self, target: Target, mock: Managed, mock_url: str, stats: aiohttp.ClientSession) -> None:
        self.target, self.mock, self.mock_url, self.stats = target, mock, mock_url, stats
        self.peak_rss = 0
        self._stop = asyncio.Event()

    async def mock_counters(self) -> dict[str, int]:
        async with self.stats.get(self.mock_url + "/stats") as r:
            return json.loads(await r.read())

    async def _sample(self) -> None:
        proc = self.target.proc
        while proc is not None and not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, proc.rss())
            try:
                await asyncio.wait_for(self._stop.wait(), 0.25)
            except TimeoutError:
                pass

    async def run(self, coro: Any) -> tuple[Recorder, dict[str, Any]]:
        proc = self.target.proc
        c0 = await self.mock_counters()
        cpu0 = (proc.cpu() if proc else 0.0, self.mock.cpu(), time.process_time())
        wait0 = proc.runq_wait() if proc else 0.0
        sampler = asyncio.get_running_loop().create_task(self._sample())
        t0 = time.monotonic()
        rec: Recorder = await coro
        wall = time.monotonic() - t0
        self._stop.set()
        await sampler
        cpu1 = (proc.cpu() if proc else 0.0, self.mock.cpu(), time.process_time())
        wait1 = proc.runq_wait() if proc else 0.0
        c1 = await self.mock_counters()
        n = max(rec.ok, 1)
        chat = c1["chat"] - c0["chat"]
        extra: dict[str, Any] = {
            "wall_s": round(wall, 2),
            "cpu_ms_per_req": {
                "target": round((cpu1[0] - cpu0[0]) * 1000 / n, 3) if proc else None,
                "mock": round((cpu1[1] - cpu0[1]) * 1000 / n, 4),
                "loadgen": round((cpu1[2] - cpu0[2]) * 1000 / n, 4),
            },
            "target_cpu_util": round((cpu1[0] - cpu0[0]) / wall, 3) if proc and wall > 0 else None,
            # share of the wall time the target's threads were runnable but had no core
            "target_runq_wait": round((wait1 - wait0) / wall, 3) if proc and wall > 0 else None,
            "mock_cpu_s": round(cpu1[1] - cpu0[1], 3),
            "rss_peak_mb": round(self.peak_rss / 2**20, 1) if proc else None,
            "upstream_requests": chat,
            "spec_injected_fraction": round((c1["marker"] - c0["marker"]) / chat, 4) if chat else None,
        }
        return rec, extra


async def measure_point(
    target: Target,
    session: aiohttp.ClientSession,
    mock: Managed,
    mock_url: str,
    stats: aiohttp.ClientSession,
    plan: Plan,
    stream: bool,
    rate: float | None,
) -> dict[str, Any]:
    """Warm up (closed loop, short), then one open-loop point (``rate``) or a saturation run."""
    job = loadgen.make_job(target.base_url, target.model, stream, plan.max_tokens)
    if plan.warmup_s > 0:
        await loadgen.closed_loop(session, job, min(plan.concurrency, 16), plan.warmup_s)
        await asyncio.sleep(min(0.2, plan.settle_s))
    meter = Meter(target, mock, mock_url, stats)
    if rate is not None:
        coro = loadgen.open_loop(session, job, rate, plan.duration_s, plan.max_inflight, plan.drain_s)
    else:
        coro = loadgen.closed_loop(session, job, plan.concurrency, plan.saturation_s)
    rec, extra = await meter.run(coro)
    point: dict[str, Any] = {
        "target": target.name,
        "stream": stream,
        "mode": "open" if rate is not None else "saturation",
        "offered_rps": rate,
        "concurrency": None if rate is not None else plan.concurrency,
        "duration_s": plan.duration_s if rate is not None else plan.saturation_s,
        **rec.to_dict(),
        **extra,
    }
    point["saturated"] = bool(rate is not None and (rec.error_count > 0 or point["achieved_rps"] < 0.9 * rate))
    return point


async def run_matrix(
    plan: Plan, targets: list[Target], mock: Managed, mock_url: str, exited: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """All points, interleaved by target; prints one line per point as it goes.

    A target whose process exits (a crash) is noted in ``exited`` with the point it died in and
    its exit code, and its later points are left out: connection errors from a dead process say
    nothing about its throughput.
    """
    exited = {} if exited is None else exited
    points: list[dict[str, Any]] = []
    sessions = {t.name: loadgen.new_session(plan.max_inflight, plan.timeout_s) for t in targets}
    stats = aiohttp.ClientSession()
    try:
        for stream in plan.streams:
            schedule: list[float | None] = [*plan.rates, *([None] if plan.saturation_s > 0 else [])]
            for rate in schedule:
                for t in targets:
                    if t.name in exited:
                        continue
                    p = await measure_point(t, sessions[t.name], mock, mock_url, stats, plan, stream, rate)
                    p["settle_s"] = await settle(t, plan.settle_s)
                    points.append(p)
                    _progress(p)
                    if t.proc is not None and not t.proc.alive():
                        where = f"{'stream' if stream else 'json'}@{'saturation' if rate is None else f'{rate:g}'}"
                        exited[t.name] = {"exited_during": where, "exit_code": t.proc.popen.returncode}
                        print(
                            f"[bench] {t.name} exited (code {t.proc.popen.returncode}) during {where}; "
                            "its later points are left out",
                            flush=True,
                        )
    finally:
        for s in sessions.values():
            await s.close()
        await stats.close()
    return points


async def settle(target: Target, minimum_s: float, idle_util: float = 0.05, limit_s: float = 60.0) -> float:
    """Wait until the target is idle again; returns the seconds waited.

    An overloaded proxy keeps working through its backlog after the client gave up; with all
    proxies pinned to the same core(s), that work would be charged to the next target measured.
    """
    start = time.monotonic()
    await asyncio.sleep(minimum_s)
    proc = target.proc
    while proc is not None and time.monotonic() - start < limit_s:
        c0 = proc.cpu()
        await asyncio.sleep(0.25)
        if (proc.cpu() - c0) / 0.25 < idle_util:
            break
    return round(time.monotonic() - start, 2)


def _progress(p: dict[str, Any]) -> None:
    lat = p["latency_ms"] or {}
    what = f"{p['offered_rps']:g} req/s" if p["mode"] == "open" else f"saturation c={p['concurrency']}"
    print(
        f"[bench] {p['target']:<9} {'stream' if p['stream'] else 'json  '} {what:<18} "
        f"achieved={p['achieved_rps']:>8.1f}/s p50={lat.get('p50', float('nan')):.2f}ms "
        f"p99={lat.get('p99', float('nan')):.2f}ms errors={p['errors']}",
        flush=True,
    )
