"""Open-loop and closed-loop load for OpenAI chat completions, streaming-aware.

Why not wrk/wrk2 or ab: they time a response as a whole and cannot see *inside* an SSE stream,
so they cannot report time-to-first-token or the delay between chunks, which is where a streaming
proxy hurts users. This generator is an asyncio + aiohttp client that timestamps every read.

Why open loop: a closed-loop client (N workers sending back to back) slows down when the target
slows down, so the queueing it causes never shows in the percentiles ("coordinated omission").
Here request *i* is due at ``t0 + i / rate`` whatever happened before, and its latency is counted
from that due time. ``closed_loop`` exists only to find the saturation throughput.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from bench.stats import Recorder

OVERHEAD_HEADER = "X-Speclearn-Overhead-Ms"
_DONE = b"data: [DONE]"


@dataclass(frozen=True)
class Job:
    """One kind of request, pre-encoded so the generator spends no time serializing."""

    url: str
    body: bytes
    stream: bool
    headers: dict[str, str]


def make_job(base_url: str, model: str, stream: bool, max_tokens: int = 16) -> Job:
    """A small chat request; the user text is fixed so every target sees identical bytes."""
    import json

    payload: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "max_tokens": max_tokens,
    }
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return Job(
        url=base_url.rstrip("/") + "/chat/completions",
        body=json.dumps(payload).encode(),
        stream=stream,
        headers={"Content-Type": "application/json", "Authorization": "Bearer bench"},
    )


def new_session(max_connections: int, timeout_s: float) -> aiohttp.ClientSession:
    """One pooled client per target; no decompression, no cookie jar: nothing we do not measure."""
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, force_close=False, ttl_dns_cache=None)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def one_request(session: aiohttp.ClientSession, job: Job, due: float, rec: Recorder) -> None:
    """Send one request; record latency from ``due`` (the scheduled time), TTFT and chunk gaps."""
    now = time.perf_counter  # uvloop's loop.time() ticks in whole milliseconds: too coarse here
    start = now()
    rec.sent += 1
    rec.first_start = min(rec.first_start, due)
    rec.sched_lag.append((start - due) * 1000.0)
    try:
        async with session.post(job.url, data=job.body, headers=job.headers) as resp:
            if resp.status != 200:
                await resp.read()
                rec.error(f"http_{resp.status}")
                return
            hdr = resp.headers.get(OVERHEAD_HEADER)
            if job.stream:
                last = 0.0
                tail = b""
                events = 0
                async for data in resp.content.iter_any():
                    t = now()
                    n = data.count(b"data:")
                    if n:
                        if events == 0:
                            rec.ttft.append((t - due) * 1000.0)
                        else:
                            rec.gaps.append((t - last) * 1000.0)
                        # Events that arrived in the same read are 0 ms apart as the client sees them.
                        rec.gaps.extend([0.0] * (n - 1))
                        events += n
                        last = t
                    tail = (tail + data)[-64:]
                if _DONE not in tail:
                    rec.error("stream_not_terminated")  # a broken stream must not pass as success
                    return
                if events < 2:
                    rec.error("stream_too_short")
                    return
            else:
                body = await resp.read()
                if b'"choices"' not in body:
                    rec.error("bad_body")
                    return
    except asyncio.CancelledError:
        rec.error("cancelled_at_drain")
        raise
    except TimeoutError:
        rec.error("timeout")
        return
    except aiohttp.ClientError as e:
        rec.error(type(e).__name__)
        return
    done = now()
    rec.ok += 1
    rec.latency.append((done - due) * 1000.0)
    rec.last_done = max(rec.last_done, done)
    if hdr is not None:
        try:
            rec.self_overhead.append(float(hdr))
        except ValueError:
            pass


async def open_loop(
    session: aiohttp.ClientSession,
    job: Job,
    rate: float,
    duration_s: float,
    max_inflight: int = 2000,
    drain_s: float = 10.0,
) -> Recorder:
    """Fixed arrival schedule at ``rate`` req/s for ``duration_s``; late answers count as late.

    A request due while ``max_inflight`` are outstanding is counted as an error
    (``dropped_max_inflight``) rather than delayed, so the schedule never bends. After the
    schedule, outstanding requests get ``drain_s`` to finish, then are cancelled as errors.
    """
    loop = asyncio.get_running_loop()
    rec = Recorder(window_s=duration_s)
    total = max(1, int(rate * duration_s))
    interval = 1.0 / rate
    tasks: set[asyncio.Task[None]] = set()
    t0 = time.perf_counter() + 0.01
    for i in range(total):
        due = t0 + i * interval
        await _until(due)
        if len(tasks) >= max_inflight:
            rec.sent += 1
            rec.error("dropped_max_inflight")
            continue
        task = loop.create_task(one_request(session, job, due, rec))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await _drain(tasks, drain_s)
    return rec


async def closed_loop(
    session: aiohttp.ClientSession,
    job: Job,
    concurrency: int,
    duration_s: float | None = None,
    total: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> Recorder:
    """``concurrency`` workers sending back to back, for a time or a request count.

    Latency here is service time (from the actual send): this mode finds the throughput ceiling,
    it does not judge latency. ``on_done`` sees the running count of finished requests (memcheck).
    """
    loop = asyncio.get_running_loop()
    rec = Recorder()
    stop = time.perf_counter() + duration_s if duration_s is not None else float("inf")
    tickets = iter(range(total)) if total is not None else None
    finished = 0

    async def worker() -> None:
        nonlocal finished
        while time.perf_counter() < stop:
            if tickets is not None and next(tickets, None) is None:
                return
            await one_request(session, job, time.perf_counter(), rec)
            finished += 1
            if on_done is not None:
                on_done(finished)

    started = time.perf_counter()
    workers = [loop.create_task(worker()) for _ in range(concurrency)]
    await asyncio.gather(*workers)
    rec.window_s = time.perf_counter() - started
    return rec


async def _until(due: float) -> None:
    """Sleep until ``due`` (perf_counter time) to within a few microseconds.

    The event loop's timers have millisecond granularity (uvloop), which would add up to 1 ms of
    schedule lag to every request; so sleep to 1.5 ms before, then yield to the loop (which keeps
    serving in-flight responses) until the due time. Costs a little harness CPU at low rates only.
    """
    wait = due - time.perf_counter()
    if wait > 0.0015:
        await asyncio.sleep(wait - 0.0015)
    while time.perf_counter() < due:  # noqa: ASYNC110 - a yield, not a wait: no event marks a due time
        await asyncio.sleep(0)


async def _drain(tasks: set[asyncio.Task[None]], drain_s: float) -> None:
    if not tasks:
        return
    _, pending = await asyncio.wait(set(tasks), timeout=drain_s)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
