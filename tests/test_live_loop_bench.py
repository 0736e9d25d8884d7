"""bench.live_loop: its measures, its answer cache, and one `--quick` run end to end on the fake LLM.

The run is a real `speclearn serve` and a real `speclearn compiler --auto-promote` sidecar, with
the scripted LLM (tests/fake_llm.py) as the served model and the compiler's; no timing asserted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.learning import live_metrics as m
from bench.learning.live_cache import AnswerCache, cache_key, serve_cache
from tests.fake_llm import FakeLLM, system_message

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"(\w+): to_0\.9 (\d+|-) regret -?\d+\.\d exposure \d\.\d\d promotions \d+ rollbacks \d+")


def day(events: int, served: int, oracle: int, versions: dict[str, int] | None = None) -> dict[str, Any]:
    return {"events": events, "served": served, "oracle": oracle, "versions": versions or {"live@1": events}}


def test_to_ratio_counts_the_feedback_before_the_first_good_day() -> None:
    days = [day(40, 4, 40), day(40, 30, 40), day(40, 36, 40), day(40, 20, 40)]
    assert m.to_ratio(days) == 80  # 36 >= 0.9 x 40 on the third day, after 80 events
    assert m.to_ratio([day(40, 40, 40)]) == 0
    assert m.to_ratio([day(40, 35, 40), day(40, 10, 40)]) is None  # 35 < 36: never
    assert m.to_ratio([day(10, 0, 0)]) == 0  # an oracle no one likes is reached at once


def test_regret_is_the_thumbs_up_lost_against_the_oracle() -> None:
    assert m.regret([day(40, 4, 40), day(40, 30, 38)]) == 44
    assert m.regret([day(40, 40, 30)]) == -10  # the served spec beat the oracle


def test_exposure_is_the_share_served_by_versions_later_rolled_back() -> None:
    days = [day(40, 0, 0, {"live@1": 20, "live@2": 20}), day(40, 0, 0, {"live@1": 30, "live@3": 10})]
    assert m.exposure(days, ["live@2"]) == pytest.approx(20 / 80)
    assert m.exposure(days, ["live@2", "live@3"]) == pytest.approx(30 / 80)
    assert m.exposure(days, []) == 0.0 and m.exposure([], ["live@2"]) == 0.0


def test_production_at_follows_promotions() -> None:
    promotions = [(20.0, 3), (10.0, 2)]
    assert [m.production_at(t, 1, promotions) for t in (5.0, 10.0, 15.0, 25.0)] == [1, 2, 2, 3]
    assert m.production_at(5.0, 4, []) == 4


def test_final_line_format() -> None:
    assert m.final_line("short", 120, 14.2, 0.031, 1, 0) == (
        "short: to_0.9 120 regret 14.2 exposure 0.03 promotions 1 rollbacks 0"
    )
    line = m.final_line("aa", None, -3.0, 0.0, 0, 2)
    assert line == "aa: to_0.9 - regret -3.0 exposure 0.00 promotions 0 rollbacks 2" and LINE.fullmatch(line)


def test_pooled_over_seeds() -> None:
    runs = [{"to_0.9": 0, "regret": 2, "exposure": 0.5, "served_requests": 100, "promotions": 1, "rollbacks": 0},
            {"to_0.9": 40, "regret": 4, "exposure": 0.0, "served_requests": 300, "promotions": 0, "rollbacks": 1}]  # fmt: skip
    p = m.pooled(runs)
    assert (p["to_0.9"], p["regret"], p["exposure"], p["promotions"], p["rollbacks"]) == (40, 3.0, 0.125, 1, 1)
    assert p["seeds_with_promotion"] == 1 and m.pooled([{**runs[0], "to_0.9": None}, runs[1]])["to_0.9"] is None


def test_the_cache_answers_an_equal_request_once(tmp_path: Path) -> None:
    """Two users asking the same question with the same spec and seed cost one upstream call;
    another seed or another spec is another answer; the store outlives the shim."""
    counter = {"n": 0}

    def model(body: dict[str, Any]) -> str:
        counter["n"] += 1
        return f"answer {counter['n']} to {body['messages'][-1]['content']} under {system_message(body)}"

    fake = FakeLLM(answer=model)

    def ask(base: str, user: str, seed: int = 0, spec: str = "Be brief.") -> dict[str, Any]:
        body = {"model": "local", "messages": [{"role": "system", "content": spec}, {"role": "user", "content": "Hi?"}],
                "temperature": 0.8, "seed": seed, "user": user, "cache_prompt": False}  # fmt: skip
        resp = httpx.post(f"{base}/chat/completions", json=body, timeout=10)
        assert resp.status_code == 200
        return dict(resp.json())

    with fake.serve() as upstream:
        cache = AnswerCache(tmp_path / "answers", upstream)
        with serve_cache(cache) as shim:
            first, second = ask(shim, "u01"), ask(shim, "u02")
            assert first == second and len(fake.calls) == 1 and (cache.hits, cache.misses) == (1, 1)
            assert ask(shim, "u01", seed=1) != first and ask(shim, "u01", spec="Be long.") != first
            assert len(fake.calls) == 3
        with serve_cache(AnswerCache(tmp_path / "answers", upstream)) as again:  # a later run
            assert ask(again, "u03") == first and len(fake.calls) == 3
    assert cache_key({"a": 1, "b": [2], "user": "x"}) == cache_key({"b": [2], "a": 1})


def test_the_cache_passes_errors_through_and_stores_none(tmp_path: Path) -> None:
    fake = FakeLLM(fail_first=1)
    with fake.serve() as upstream, serve_cache(AnswerCache(tmp_path, upstream)) as shim:
        body = {"model": "m", "messages": [{"role": "user", "content": "Hi?"}]}
        assert httpx.post(f"{shim}/chat/completions", json=body).status_code == 500
        assert httpx.post(f"{shim}/chat/completions", json=body).status_code == 200
        assert httpx.post(f"{shim}/chat/completions", json=body).status_code == 200
    assert len(fake.calls) == 2


SERVED = """
import sys
sys.path.insert(0, {repo!r})
from tests.fake_llm import FakeLLM, system_message
from bench.learning.live_loop import main

def model(body):
    # the fake model answers briefly only when its spec asks for it: the static prompt fails the taste
    spec = system_message(body).lower()
    return "A short answer." if "25 words" in spec or "short" in spec else "Well, " * 40

with FakeLLM(answer=model).serve() as url:
    raise SystemExit(main(["--base-url", url, "--quick", *sys.argv[1:]]))
"""


@pytest.mark.timeout(300)
def test_quick_run_on_the_fake_llm(tmp_path: Path) -> None:
    """`--quick` end to end: per-day JSON for every day, the plot, and the last line's shape."""
    out = tmp_path / "live.json"
    script = tmp_path / "run.py"
    script.write_text(SERVED.format(repo=str(REPO)))
    proc = subprocess.run(
        [sys.executable, str(script), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, f"STDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-3000:]}"
    last = proc.stdout.strip().splitlines()[-1]
    match = LINE.fullmatch(last)
    assert match and match.group(1) == "short", last
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert run["world"] == "short" and len(run["days"]) == 3
    for i, d in enumerate(run["days"]):
        assert d["day"] == i and d["events"] == 12 and d["events_so_far"] == 12 * (i + 1)
        assert {"served", "static", "oracle", "versions", "label_mix", "compile", "after"} <= d.keys()
        assert d["static"]["rate"] == 0.0 and d["oracle"]["rate"] == 1.0  # the fake model, as scripted
        assert sum(d["versions"].values()) == 12
    # the sidecar's round after each day but the last (after it nothing more is served)
    for d in run["days"][:-1]:
        assert d["rounds"] and d["rounds"][-1]["result"] == d["compile"]["result"]
        assert d["compile"]["result"] in ("published", "explored", "gate_failed", "skipped", "held")
    assert run["days"][-1]["compile"]["result"].startswith("not awaited")
    assert run["days"][0]["versions"] == {"live@1": 12}
    assert run["compiler"]["llm_calls"] > 0
    # every arm asks through the cache: the static arm replays the answers served on the static spec
    assert report["cache"]["hits"] + report["cache"]["misses"] == 3 * 3 * 12
    assert report["cache"]["hits"] >= 12 and out.with_suffix(".png").stat().st_size > 0
