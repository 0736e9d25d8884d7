"""A fault-injecting upstream: what the client sees and what the ledger keeps, per fault."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from helpers import FakeUpstream, ProxyProcess, free_port, start_proxy
from ledger_reader import inference_row

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def proxy(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    handle = start_proxy(
        tmp_path_factory.mktemp("faults"), fake_upstream.url,
        env={"SPECLEARN_READ_TIMEOUT": "1.0", "SPECLEARN_MAX_BODY_BYTES": "20000"},
    )  # fmt: skip
    yield handle
    handle.stop()


def post_chat(proxy: ProxyProcess, fault: str = "", stream: bool = False, **body: object) -> httpx.Response:
    payload = {"model": "m", "messages": MESSAGES, "stream": stream, **body}
    return httpx.post(proxy.base_url + "/chat/completions", json=payload, headers={"X-Fake": fault}, timeout=10)


@pytest.mark.parametrize("code", [400, 429, 500, 503])
def test_upstream_status_passes_through_with_its_body(proxy: ProxyProcess, code: int) -> None:
    r = post_chat(proxy, f"status={code}")
    assert r.status_code == code
    assert r.json()["error"]["message"] == f"fake upstream says {code}"
    row = inference_row(proxy.data_dir, r.headers["x-inference-id"])
    assert (row["status"], row["http_status"]) == ("error", code)
    assert row["error"] == f"fake upstream says {code}"


def test_openai_client_sees_rate_limit_error(proxy: ProxyProcess) -> None:
    c = openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"X-Fake": "status=429"})


def test_connection_reset_is_502(proxy: ProxyProcess) -> None:
    r = post_chat(proxy, "reset")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_unavailable"
    assert inference_row(proxy.data_dir, r.headers["x-inference-id"])["status"] == "error"


def test_stall_past_read_timeout_is_504(proxy: ProxyProcess) -> None:
    r = post_chat(proxy, "stall=3")
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "upstream_timeout"
    row = inference_row(proxy.data_dir, r.headers["x-inference-id"])
    assert (row["status"], row["http_status"]) == ("error", 504)


def test_unreachable_upstream_is_502(tmp_path: Path) -> None:
    dead = start_proxy(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    try:
        r = post_chat(dead)
        assert r.status_code == 502
        assert "could not connect" in r.json()["error"]["message"]
    finally:
        dead.stop()


def sse_data(body: str) -> list[str]:
    return [line[6:] for line in body.split("\n") if line.startswith("data: ")]


@pytest.mark.parametrize(
    ("fault", "kind"), [("cut", "reset"), ("malformed", "malformed_chunk"), ("no-done", "broken_stream")]
)
def test_broken_stream_ends_with_error_event_and_no_done(proxy: ProxyProcess, fault: str, kind: str) -> None:
    r = post_chat(proxy, fault, stream=True)
    assert r.status_code == 200
    data = sse_data(r.text)
    assert "[DONE]" not in data
    assert json.loads(data[-1])["error"]["code"] == kind
    row = inference_row(proxy.data_dir, r.headers["x-inference-id"])
    assert row["status"] == "incomplete"


def test_openai_client_raises_on_broken_stream(proxy: ProxyProcess) -> None:
    c = openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0)
    stream = c.chat.completions.create(model="m", messages=MESSAGES, stream=True, extra_headers={"X-Fake": "cut"})
    with pytest.raises(openai.APIError):
        list(stream)


def test_complete_stream_is_logged_with_text_and_usage(proxy: ProxyProcess) -> None:
    r = post_chat(proxy, stream=True, stream_options={"include_usage": True})
    assert sse_data(r.text)[-1] == "[DONE]"
    row = inference_row(proxy.data_dir, r.headers["x-inference-id"])
    assert row["status"] == "ok"
    assert row["response_text"] == "system=DEFAULT SPEC\n"
    assert orjson.loads(row["usage"])["prompt_tokens"] == 7
    assert row["ttft_ms"] is not None
    # stored without the injected spec
    assert orjson.loads(row["request"])["messages"] == MESSAGES
    assert (row["spec_name"], row["spec_version"]) == ("default", 1)


@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"model": "m"}', 400, "'messages' is required"),
        (b'{"model": "m", "messages": "hi"}', 400, "'messages' must be an array"),
        (b'{"model": "m", "messages": [{"content": "x"}]}', 400, "messages[0].role"),
        (b'{"model": 5, "messages": []}', 400, "'model' must be a string"),
        (b'{"model": "m", "messages": [], "stream": "yes"}', 400, "'stream' must be a boolean"),
        (b"", 400, "empty"),
    ],
)
def test_bad_requests_get_precise_400s(proxy: ProxyProcess, content: bytes, status: int, needle: str) -> None:
    r = httpx.post(proxy.base_url + "/chat/completions", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"


def test_oversize_body_is_413(proxy: ProxyProcess) -> None:
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 30000}]}
    r = httpx.post(proxy.base_url + "/chat/completions", json=big)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


def test_oversize_chunked_body_without_length_is_413(proxy: ProxyProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"}]}'

    r = httpx.post(proxy.base_url + "/chat/completions", content=chunks())
    assert r.status_code == 413


def test_unknown_route_and_method_answer_in_openai_shape(proxy: ProxyProcess) -> None:
    r = httpx.get(proxy.root_url + "/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.post(proxy.root_url + "/healthz")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_client_disconnect_mid_stream_closes_upstream(proxy: ProxyProcess, fake_upstream: FakeUpstream) -> None:
    before = len(fake_upstream.closed_streams)
    payload = {"model": "m", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", proxy.base_url + "/chat/completions", json=payload, headers={"X-Fake": "slow"}) as r:
        inference_id = r.headers["x-inference-id"]
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
    closed_at = time.monotonic()
    deadline = closed_at + 5
    while len(fake_upstream.closed_streams) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(fake_upstream.closed_streams) > before, "upstream stream still open after the client left"
    row = inference_row(proxy.data_dir, inference_id)
    assert row["status"] == "cancelled"


def test_client_disconnect_while_waiting_cancels_upstream_request(
    proxy: ProxyProcess, fake_upstream: FakeUpstream
) -> None:
    """Non-streaming: the client gives up during a long upstream wait; the proxy must not wait on."""
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            proxy.base_url + "/chat/completions", json={"model": "m", "messages": MESSAGES},
            headers={"X-Fake": "stall=3", "X-Inference-Id": "gone-1"}, timeout=0.3,
        )  # fmt: skip
    row = inference_row(proxy.data_dir, "gone-1")
    assert row["status"] == "cancelled"
    assert row["latency_ms"] < 3000  # recorded when the client left, not when the upstream answered
