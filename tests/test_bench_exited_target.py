"""The overhead benchmark notices a target whose process exits (LiteLLM once died of a segfault
mid-run) and leaves its later points out, instead of reporting connection errors as throughput."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bench.performance import procs, targets
from bench.performance.runner import Plan, run_matrix


def test_a_target_that_exits_is_noted_and_its_later_points_skipped(tmp_path: Path) -> None:
    mock, port = targets.start_mock(tmp_path / "logs", None, 4, 0.0, 0.0)
    gone = procs.start("gone", [sys.executable, "-c", "pass"], tmp_path / "logs")
    try:
        gone.popen.wait(10)
        direct = targets.Target("direct", f"http://127.0.0.1:{port}/v1", "bench", None)
        dead = targets.Target("gone", f"http://127.0.0.1:{procs.free_port()}/v1", "bench", gone)
        plan = Plan(
            rates=[20.0, 40.0],
            streams=[False],
            duration_s=0.2,
            warmup_s=0.0,
            saturation_s=0.2,
            concurrency=2,
            max_inflight=50,
            drain_s=1.0,
            timeout_s=2.0,
            max_tokens=4,
            settle_s=0.0,
        )
        exited: dict[str, dict[str, object]] = {}
        points = asyncio.run(run_matrix(plan, [direct, dead], mock, f"http://127.0.0.1:{port}", exited))
    finally:
        mock.stop()
        if gone.popen.poll() is None:
            gone.popen.kill()
    assert exited == {"gone": {"exited_during": "json@20", "exit_code": 0}}
    assert [p["offered_rps"] for p in points if p["target"] == "gone"] == [20.0]  # only the point it died in
    assert len([p for p in points if p["target"] == "direct"]) == 3
