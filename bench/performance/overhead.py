"""``python -m bench.performance.overhead``: what speclearn adds over calling the upstream directly, vs LiteLLM.

One command starts the mock upstream, speclearn and LiteLLM (same mock, same cores, same worker
count), runs open-loop points and a saturation run against all three, interleaved, and writes
``overhead.json``, ``overhead.txt`` and ``overhead.png`` to the output folder. ``--memcheck`` and
``--profile`` reuse the same start-up for the leak check and the py-spy profile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.performance import procs, report, targets
from bench.performance.mock_upstream import install_fast_loop
from bench.performance.runner import Plan, run_matrix
from bench.performance.targets import Target

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.performance.overhead", description=__doc__.split("\n")[0])
    p.add_argument("--rates", default="50,200,500,1000", help="open-loop offered rates, req/s (comma list)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per open-loop point")
    p.add_argument("--warmup", type=float, default=1.0, help="closed-loop warm-up seconds before each point")
    p.add_argument("--stream", choices=("on", "off", "both"), default="both", help="SSE streaming, JSON, or both")
    p.add_argument("--workers", type=int, default=1, help="proxy workers (speclearn and LiteLLM alike)")
    p.add_argument("--concurrency", type=int, default=32, help="closed-loop saturation concurrency")
    p.add_argument("--saturation-duration", type=float, default=None, help="seconds (default: --duration; 0 skips)")
    p.add_argument(
        "--max-inflight", type=int, default=1000, help="open-loop cap; beyond it a request counts as dropped"
    )
    p.add_argument("--drain", type=float, default=10.0, help="seconds to let a point's outstanding requests finish")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    p.add_argument("--tokens", type=int, default=16, help="mock completion tokens (SSE content chunks)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="mock delay before answer/first chunk")
    p.add_argument("--chunk-delay-ms", type=float, default=0.0, help="mock delay between chunks")
    p.add_argument(
        "--pin",
        choices=("auto", "off"),
        default="auto",
        help="auto: proxy on cores 0..workers-1, mock+load generator on the rest (if any left)",
    )
    p.add_argument("--skip-litellm", action="store_true", help="only direct and speclearn")
    p.add_argument(
        "--skip-speclearn", action="store_true", help="only direct and LiteLLM (e.g. before the proxy exists)"
    )
    p.add_argument(
        "--litellm-requirement", default=targets.LITELLM_REQUIREMENT, help="pip requirement for the LiteLLM venv"
    )
    p.add_argument("--quick", action="store_true", help="seconds-long smoke: tiny rates and durations")
    p.add_argument("--gateway", action="store_true",
                   help="speclearn with redaction on, two routes (one with a fallback) and retries armed")  # fmt: skip
    p.add_argument(
        "--memcheck", action="store_true", help="10,000 streaming requests through speclearn; RSS growth check"
    )
    p.add_argument("--memcheck-requests", type=int, default=10_000)
    p.add_argument("--profile", action="store_true", help="py-spy record the proxy under saturation")
    p.add_argument("--profile-target", choices=("speclearn", "litellm"), default="speclearn")
    p.add_argument("--profile-seconds", type=float, default=15.0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    a = p.parse_args(argv)
    if a.quick:
        a.rates, a.duration, a.warmup, a.drain = "20,50", 0.5, 0.1, 3.0
        a.concurrency = min(a.concurrency, 8)
        a.saturation_duration = 0.5 if a.saturation_duration is None else a.saturation_duration
        a.memcheck_requests = min(a.memcheck_requests, 2_000)
        a.profile_seconds = min(a.profile_seconds, 4.0)
    if a.saturation_duration is None:
        a.saturation_duration = a.duration
    return a


def _plan(a: argparse.Namespace) -> Plan:
    return Plan(
        rates=[float(r) for r in a.rates.split(",") if r.strip()],
        streams={"on": [True], "off": [False], "both": [False, True]}[a.stream],
        duration_s=a.duration,
        warmup_s=a.warmup,
        saturation_s=a.saturation_duration,
        concurrency=a.concurrency,
        max_inflight=a.max_inflight,
        drain_s=a.drain,
        timeout_s=a.timeout,
        max_tokens=a.tokens,
        settle_s=0.05 if a.quick else 0.3,
    )


def _wanted(a: argparse.Namespace) -> list[str]:
    if a.memcheck:
        return ["speclearn"]
    if a.profile:
        return [a.profile_target]
    return [n for n, skip in (("speclearn", a.skip_speclearn), ("litellm", a.skip_litellm)) if not skip]


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    install_fast_loop()
    out: Path = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log_dir = out / "logs"
    work = Path(tempfile.mkdtemp(prefix="speclearn-bench-"))
    proxy_cpus, harness_cpus = procs.pinning(a.workers, a.pin)
    if harness_cpus:
        os.sched_setaffinity(0, harness_cpus)
    print(
        f"[bench] pinning: proxy cores={sorted(proxy_cpus) if proxy_cpus else 'any'}, "
        f"mock+loadgen cores={sorted(harness_cpus) if harness_cpus else 'any'}",
        flush=True,
    )

    mock, mock_port = targets.start_mock(log_dir, harness_cpus, a.tokens, a.delay_ms, a.chunk_delay_ms)
    mock_url = f"http://127.0.0.1:{mock_port}"
    started: list[Target] = []
    status: dict[str, Any] = {"direct": {"status": "ok"}}
    try:
        for name in _wanted(a):
            t0 = time.monotonic()
            try:
                if name == "speclearn":
                    t = targets.start_speclearn(work, log_dir, mock_port, a.workers, proxy_cpus, gateway=a.gateway)
                else:
                    t = targets.start_litellm(work, log_dir, mock_port, a.workers, proxy_cpus, a.litellm_requirement)
            except Exception as e:  # noqa: BLE001 - a target that cannot start is reported, not fatal
                status[name] = {"status": "failed", "reason": str(e)[-3000:]}
                print(f"[bench] {name} failed to start: {str(e)[-1500:]}", file=sys.stderr, flush=True)
                continue
            assert t.proc is not None
            status[name] = {
                "status": "ok",
                "startup_s": round(time.monotonic() - t0, 2),
                "rss_idle_mb": round(t.proc.rss() / 2**20, 1),
            }
            started.append(t)
        if a.memcheck:
            return _memcheck(a, started, out)
        if a.profile:
            return _profile(a, started, out)
        if "speclearn" in _wanted(a) and status.get("speclearn", {}).get("status") != "ok":
            return 2  # the point of the run is speclearn; its failure is the result
        direct = Target("direct", f"{mock_url}/v1", "bench", None)
        plan = _plan(a)
        exited: dict[str, dict[str, Any]] = {}
        points = asyncio.run(run_matrix(plan, [direct, *started], mock, mock_url, exited))
        for name, info in exited.items():
            status[name] = {**status[name], "status": "exited", **info}
        report.add_deltas(points)
        result: dict[str, Any] = {
            "meta": _meta(a, plan, proxy_cpus, harness_cpus),
            "targets": status,
            "mock": report.mock_ceiling(points),
            "peak_rss_mb": report.peak_rss(points),
            "headline": report.headline(points),
            "points": points,
        }
        report.write_json(out / "overhead.json", result)
        text = report.table(points) + "\n\n" + report.headline_text(result["headline"]) + "\n"
        text += f"mock ceiling: {result['mock']}\npeak RSS (MB): {result['peak_rss_mb']}\n"
        for name, info in exited.items():
            text += (
                f"{name} exited (code {info['exit_code']}) during {info['exited_during']}: "
                "its later points were not run\n"
            )
        (out / "overhead.txt").write_text(text)
        plotted = report.plot(out / "overhead.png", points)
        print("\n" + text)
        png = f", {out / 'overhead.png'}" if plotted else " (matplotlib missing: no plot)"
        print(f"[bench] wrote {out / 'overhead.json'}{png}")
        return 0
    finally:
        for t in started:
            if t.proc is not None:
                t.proc.stop()
        mock.stop()
        shutil.rmtree(work, ignore_errors=True)


def _memcheck(a: argparse.Namespace, started: list[Target], out: Path) -> int:
    from bench.performance.memcheck import memcheck

    if not started:
        print("[bench] memcheck needs speclearn running", file=sys.stderr)
        return 2
    res = asyncio.run(
        memcheck(
            started[0],
            total=a.memcheck_requests,
            checkpoint=min(1000, a.memcheck_requests // 2),
            concurrency=a.concurrency,
        )
    )
    report.write_json(out / "memcheck.json", res)
    verdict = "PASS" if res["passed"] else "FAIL"
    print(
        f"[bench] memcheck {verdict}: RSS {res['rss_mb_at_checkpoint']} MB after {res['checkpoint']} -> "
        f"{res['rss_mb_end']} MB after {res['requests']} (growth {res['growth']}, limit {res['tolerance']}), "
        f"errors={res['errors']}; trace {res['trace_mb']}"
    )
    return 0 if res["passed"] else 1


def _profile(a: argparse.Namespace, started: list[Target], out: Path) -> int:
    from bench.performance.profile import profile, summary_text

    if not started:
        print(f"[bench] profile needs {a.profile_target} running", file=sys.stderr)
        return 2
    code = 0
    for stream in _plan(a).streams:
        try:
            s = asyncio.run(profile(started[0], out, a.profile_seconds, a.concurrency, stream))
        except RuntimeError as e:
            print(f"[bench] profile failed: {e}", file=sys.stderr)
            code = 1
            continue
        print(summary_text(s))
    return code


def _meta(a: argparse.Namespace, plan: Plan, proxy: set[int] | None, harness: set[int] | None) -> dict[str, Any]:
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "pinning": {"proxy": sorted(proxy) if proxy else None, "harness": sorted(harness) if harness else None},
        "workers": a.workers,
        "litellm": a.litellm_requirement,
        "mock": {"tokens": a.tokens, "delay_ms": a.delay_ms, "chunk_delay_ms": a.chunk_delay_ms},
        "plan": plan.__dict__,
        "quick": a.quick,
        "gateway": targets.gateway_env(0) if a.gateway else None,  # speclearn's gateway settings (port elided)
    }


if __name__ == "__main__":
    sys.exit(main())
