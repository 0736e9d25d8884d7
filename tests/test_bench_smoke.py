"""Smoke test of the overhead benchmark: it runs end to end and every request succeeds.

Why no timing assertions: CI machines are shared and noisy; a latency threshold here would only
flake. The benchmark's numbers are read by people (bench/README.md); this test guards that the
harness itself works — mock, load generator, speclearn start-up, spec injection, JSON shape.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
POINT_KEYS = {
    "target", "stream", "mode", "offered_rps", "concurrency", "duration_s", "sent", "ok", "errors",
    "error_kinds", "achieved_rps", "latency_ms", "ttft_ms", "inter_chunk_ms", "cpu_ms_per_req",
    "rss_peak_mb", "spec_injected_fraction", "saturated",
}


@pytest.mark.timeout(240)
def test_quick_overhead_run(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.overhead", "--quick", "--skip-litellm", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert proc.returncode == 0, f"bench failed:\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-4000:]}"
    result = json.loads((out / "overhead.json").read_text())

    assert {"meta", "targets", "mock", "peak_rss_mb", "headline", "points"} <= result.keys()
    assert result["targets"]["speclearn"]["status"] == "ok"
    assert "litellm" not in result["targets"]

    points = result["points"]
    for target in ("direct", "speclearn"):
        mine = [p for p in points if p["target"] == target]
        # 2 rates + 1 saturation run, for JSON and for SSE
        assert len(mine) == 6, [(p["stream"], p["mode"], p["offered_rps"]) for p in mine]
        assert {p["stream"] for p in mine} == {False, True}
        assert {p["mode"] for p in mine} == {"open", "saturation"}
        for p in mine:
            assert POINT_KEYS <= p.keys()
            assert p["errors"] == 0, (target, p["stream"], p["offered_rps"], p["error_kinds"])
            assert p["ok"] > 0 and p["ok"] == p["sent"]
            assert set(p["latency_ms"]) >= {"p50", "p90", "p99"}
            if p["stream"]:
                assert p["ttft_ms"] is not None and p["inter_chunk_ms"] is not None
    for p in points:
        if p["target"] == "speclearn":
            assert p["added_latency_ms"] is not None and set(p["added_latency_ms"]) == {"p50", "p90", "p99"}
            # Every upstream request carried the bench spec: injection is really on the path.
            assert p["spec_injected_fraction"] == 1.0
            assert p["rss_peak_mb"] and p["rss_peak_mb"] > 0
        else:
            assert p["spec_injected_fraction"] == 0.0


def test_wording_counts_the_answers_the_taste_likes(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.wording import main
    from tests.fake_llm import FakeLLM
    from tests.test_compiler_unary import model_that_closes_only_when_told

    told = 'Be helpful. End every answer with the line "Hope this helps!".'
    with FakeLLM(answer=model_that_closes_only_when_told).serve() as base_url:
        assert main(["--taste", "closing", "--questions", "4", "--base-url", base_url,
                     "--spec", told, "--spec", "Be helpful."]) == 0  # fmt: skip
    assert capsys.readouterr().out.splitlines() == [f"4/4 [0.51,1.00]  {told}", "0/4 [0.00,0.49]  Be helpful."]


def test_reconstruct_prints_one_line_per_data_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The reconstruction benchmark end to end on the fake LLM (compile, judge arms, checks)."""
    import re

    from bench.reconstruct import DATASETS, main
    from tests.fake_llm import FakeLLM

    out = tmp_path / "reconstruct.json"
    with FakeLLM().serve() as base_url:
        assert main(["--base-url", base_url, "--limit", "2", "--seeds", "0", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()[-len(DATASETS):]
    num, ci = r"\d\.\d\d", r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\]"
    for name, line in zip(DATASETS, lines, strict=True):
        oracle = "-" if name == "counsel-chat" else num
        assert re.fullmatch(rf"{name}: unguided {ci} guided {ci} oracle {oracle} checks ({num}|-)", line), line
    report = json.loads(out.read_text())
    assert [r["dataset"] for r in report["results"]] == list(DATASETS)
    for r in report["results"]:
        assert r["unguided"]["n"] == r["guided"]["n"] == 2 and r["unguided"]["llm_calls"] == 4  # both orders
        (run,) = r["runs"]
        assert run["compile"]["llm_calls"] > 0 and run["compile"]["spec"]
    counsel = report["results"][-1]
    assert counsel["runs"][0]["train"] == 131 and counsel["oracle"] is None  # its own split column
    assert report["results"][0]["runs"][0]["train"] == 20
    assert report["judge_calibration"]["items"] == 30  # the shipped known-answer items, once
