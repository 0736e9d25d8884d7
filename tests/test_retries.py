"""Retries and fallback, never after a byte was relayed: the fault-injecting fake upstream behind
a route with a dead primary, and the default upstream answering 503, 429 or cutting a stream."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from email.utils import formatdate

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import FakeUpstream, ProxyProcess, Received, free_port, start_proxy
from ledger_reader import inference_row
from proxy import upstreams

MESSAGES = [{"role": "user", "content": "hello"}]
BUDGET = 3.0


@pytest.fixture(scope="module")
def backup() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def proxy(
    fake_upstream: FakeUpstream, backup: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: connection refused
    routes = {
        "resilient": {
            "upstreams": [
                {"url": dead, "model": "primary-model"},
                {"url": backup.url, "model": "backup-model", "api_key_env": "TEST_BACKUP_KEY"},
            ]
        },
        "dead-only": {"upstreams": [{"url": dead, "model": "primary-model"}]},
    }
    handle = start_proxy(
        tmp_path_factory.mktemp("retries"),
        fake_upstream.url,
        env={
            "SPECLEARN_ROUTES": orjson.dumps(routes).decode(),
            "TEST_BACKUP_KEY": "key-backup",
            "SPECLEARN_UPSTREAM_RETRIES": "2",
            "SPECLEARN_UPSTREAM_RETRY_BUDGET": str(BUDGET),
        },
    )
    yield handle
    handle.stop()


def post(proxy: ProxyProcess, model: str = "m", fault: str = "", stream: bool = False) -> httpx.Response:
    payload = {"model": model, "messages": MESSAGES, "stream": stream}
    return httpx.post(proxy.base_url + "/chat/completions", json=payload, headers={"X-Fake": fault}, timeout=30)


def attempts(proxy: ProxyProcess, route: str) -> dict[str, float]:
    """speclearn_upstream_attempts_total for `route`, by outcome."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(proxy.root_url + "/metrics").text):
        for sample in family.samples:
            if sample.name == "speclearn_upstream_attempts_total" and sample.labels["route"] == route:
                out[sample.labels["outcome"]] = sample.value
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def fault_of(received: Received) -> str | None:
    return next((v for k, v in received.headers.items() if k.lower() == "x-fake"), None)


def sent_with(upstream: FakeUpstream, fault: str) -> int:
    return sum(1 for r in upstream.received if fault_of(r) == fault)


def ledger_rows(proxy: ProxyProcess) -> int:
    with sqlite3.connect(proxy.data_dir / "ledger.sqlite3") as conn:
        return int(conn.execute("SELECT count(*) FROM inferences").fetchone()[0])


def test_connect_refused_falls_back_to_the_next_upstream(proxy: ProxyProcess, backup: FakeUpstream) -> None:
    before = attempts(proxy, "resilient")
    r = post(proxy, "resilient")
    assert r.status_code == 200
    seen = backup.last()
    assert (seen.body["model"], seen.headers["Authorization"]) == ("backup-model", "Bearer key-backup")
    row = inference_row(proxy.data_dir, r.headers["x-inference-id"])
    assert (row["status"], row["upstream"]) == ("ok", backup.url)
    # the primary: the first attempt and two retries refused; then the backup answered
    assert delta(attempts(proxy, "resilient"), before) == {"connect": 3, "ok": 1}


def test_every_upstream_down_is_502_naming_the_last(proxy: ProxyProcess) -> None:
    r = post(proxy, "dead-only")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_unavailable"
    row = inference_row(proxy.data_dir, r.headers["x-inference-id"])
    assert row["status"] == "error" and row["upstream"].startswith("http://127.0.0.1:")


def test_503_then_200_is_retried_into_one_ledger_row(proxy: ProxyProcess, fake_upstream: FakeUpstream) -> None:
    fault = "flaky=503x1;tag=once"
    rows, before = ledger_rows(proxy), attempts(proxy, "default")
    r = post(proxy, fault=fault)
    assert r.status_code == 200
    assert sent_with(fake_upstream, fault) == 2
    row = inference_row(proxy.data_dir, r.headers["x-inference-id"])
    assert (row["status"], row["http_status"], row["upstream"]) == ("ok", 200, fake_upstream.url)
    assert ledger_rows(proxy) == rows + 1
    assert delta(attempts(proxy, "default"), before) == {"status_5xx": 1, "ok": 1}


def test_openai_client_sees_only_the_answer_after_a_retry(proxy: ProxyProcess, fake_upstream: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0)
    fault = "flaky=502x2;tag=openai"
    answer = client.chat.completions.create(
        model="m",
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_headers={"X-Fake": fault},
    )
    assert answer.choices[0].message.content == "system=DEFAULT SPEC\n"
    assert sent_with(fake_upstream, fault) == 3


def test_retries_spent_pass_the_last_answer_on(proxy: ProxyProcess, fake_upstream: FakeUpstream) -> None:
    fault = "flaky=503x9;tag=always"
    before = attempts(proxy, "default")
    r = post(proxy, fault=fault)
    assert r.status_code == 503
    assert r.json()["error"]["message"] == "fake upstream says 503"
    assert sent_with(fake_upstream, fault) == 3  # the first attempt and SPECLEARN_UPSTREAM_RETRIES=2
    assert delta(attempts(proxy, "default"), before) == {"status_5xx": 3}
    row = inference_row(proxy.data_dir, r.headers["x-inference-id"])
    assert (row["status"], row["http_status"]) == ("error", 503)


def test_429_retry_after_is_honoured_within_the_budget(proxy: ProxyProcess, fake_upstream: FakeUpstream) -> None:
    fault = "flaky=429x1;retry-after=1;tag=wait"
    r = post(proxy, fault=fault)
    assert r.status_code == 200
    first, second = [x.at for x in fake_upstream.received if fault_of(x) == fault]
    assert second - first >= 0.9  # a lower bound the wait guarantees (the backoff alone is 0.05-0.1 s)


def test_429_retry_after_beyond_the_budget_is_passed_on_at_once(
    proxy: ProxyProcess, fake_upstream: FakeUpstream
) -> None:
    fault = f"flaky=429x1;retry-after={int(BUDGET) + 30};tag=late"
    r = post(proxy, fault=fault)
    assert r.status_code == 429
    assert r.headers["retry-after"] == str(int(BUDGET) + 30)  # the client learns when to come back
    assert sent_with(fake_upstream, fault) == 1


def test_stream_cut_after_the_first_chunk_is_not_retried(proxy: ProxyProcess, fake_upstream: FakeUpstream) -> None:
    before_sent, before = sent_with(fake_upstream, "cut"), attempts(proxy, "default")
    r = post(proxy, fault="cut", stream=True)
    assert r.status_code == 200
    data = [line[6:] for line in r.text.split("\n") if line.startswith("data: ")]
    assert json.loads(data[0])["choices"][0]["delta"]["role"] == "assistant"  # bytes reached the client
    assert json.loads(data[-1])["error"]["code"] == "reset"
    assert sent_with(fake_upstream, "cut") == before_sent + 1
    assert delta(attempts(proxy, "default"), before) == {"ok": 1}
    row = inference_row(proxy.data_dir, r.headers["x-inference-id"])
    assert (row["status"], row["upstream"]) == ("incomplete", fake_upstream.url)


def test_stream_answered_503_before_any_byte_is_retried(proxy: ProxyProcess, fake_upstream: FakeUpstream) -> None:
    fault = "flaky=503x1;tag=stream"
    r = post(proxy, fault=fault, stream=True)
    assert r.status_code == 200
    assert r.text.rstrip().endswith("data: [DONE]")
    assert sent_with(fake_upstream, fault) == 2


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = time.time()
    assert upstreams.retry_after([(b"Retry-After", b"2")], now) == 2.0
    assert upstreams.retry_after([(b"retry-after", formatdate(now + 5, usegmt=True).encode())], now) == pytest.approx(
        5, abs=1
    )
    assert upstreams.retry_after([(b"retry-after", b"soon")], now) is None
    assert upstreams.retry_after([(b"content-type", b"x")], now) is None


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    for attempt, step in [(0, 0.1), (1, 0.2), (2, 0.4), (10, upstreams.BACKOFF_CAP)]:
        for _ in range(50):
            assert step / 2 <= upstreams.backoff(attempt) <= step


def test_public_name_drops_credentials() -> None:
    assert upstreams.public_name("https://user:secret@api.example.com:8443/v1/") == "https://api.example.com:8443/v1"
