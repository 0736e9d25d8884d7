"""Leak check: 10,000 streaming requests; RSS at the end within 10% of RSS after the first 1,000.

Why after 1,000 and not at start-up: the first requests fill caches, pools and allocator arenas
legitimately; growth after that, proportional to traffic, is what a leak looks like (a per-request
object kept alive by a ledger queue, a metrics label, an un-closed upstream response...).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.performance import loadgen
from bench.performance.targets import Target


async def memcheck(
    target: Target,
    total: int = 10_000,
    checkpoint: int = 1_000,
    concurrency: int = 32,
    tolerance: float = 0.10,
    timeout_s: float = 60,
    settle_s: float = 2.0,
) -> dict[str, Any]:
    assert target.proc is not None, "memcheck needs a proxy process to watch"
    proc = target.proc
    trace: list[tuple[int, float]] = [(0, proc.rss() / 2**20)]
    step = max(1, total // 20)

    def on_done(n: int) -> None:
        if n == checkpoint or n % step == 0:
            trace.append((n, proc.rss() / 2**20))  # a few /proc reads: cheap next to a request

    session = loadgen.new_session(concurrency * 2, timeout_s)
    job = loadgen.make_job(target.base_url, target.model, stream=True)
    try:
        rec = await loadgen.closed_loop(session, job, concurrency, total=total, on_done=on_done)
    finally:
        await session.close()
    await asyncio.sleep(settle_s)  # batched ledger writes flush; idle connections close
    rss_end = proc.rss() / 2**20
    at_checkpoint = next((mb for n, mb in trace if n == checkpoint), None)
    growth = (rss_end / at_checkpoint - 1.0) if at_checkpoint else None
    passed = growth is not None and growth <= tolerance and rec.error_count == 0 and rec.ok == total
    return {
        "target": target.name,
        "requests": total,
        "ok": rec.ok,
        "errors": rec.error_count,
        "error_kinds": dict(rec.errors),
        "checkpoint": checkpoint,
        "rss_mb_at_checkpoint": round(at_checkpoint, 1) if at_checkpoint else None,
        "rss_mb_end": round(rss_end, 1),
        "growth": round(growth, 4) if growth is not None else None,
        "tolerance": tolerance,
        "passed": passed,
        "trace_mb": [[n, round(mb, 1)] for n, mb in [*trace, (total, rss_end)]],
        "achieved_rps": round(rec.achieved_rps(), 1),
    }
