"""Feedback from browsers, in process: CORS on /v1/feedback only, publishable keys that can do
nothing else, and the per-key and per-address token buckets (429 + Retry-After); and in Debian's
Chromium, the snippet's comment box, changed vote and retraction against a real proxy."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from console_fixtures import ADMIN_KEY, add_inference, client
from helpers import FakeUpstream, start_proxy
from ledger_reader import feedback_rows, inference_row
from proxy.ledger.sqlite import SqliteLedger
from proxy.ratelimit import RateLimiter, retry_after
from test_console_e2e import BROWSER_DIR, CHROMIUM, CLIENT_KEY, FEEDBACK_KEY, app_origin, browser_ready, chat_id  # noqa: F401

APP = "https://app.example"
PUBLISHABLE = {"authorization": "Bearer pk-browser"}


def browser(tmp_path: Path, **overrides):  # type: ignore[no-untyped-def]
    values = {"cors_origins": [APP, "https://other.example/"], "feedback_keys": ["pk-browser", "pk-second"]}
    return client(tmp_path, **{**values, **overrides})


def error_code(response) -> str:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "code"}
    return body["error"]["code"]


def test_preflight_allows_configured_origins_only(tmp_path: Path) -> None:
    with browser(tmp_path) as c:
        ask = {"access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type"}
        r = c.options("/v1/feedback", headers={"origin": APP, **ask})
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == APP
        assert "POST" in r.headers["access-control-allow-methods"]
        assert "authorization" in r.headers["access-control-allow-headers"]
        assert (
            c.options("/v1/feedback", headers={"origin": "https://other.example", **ask}).status_code == 204
        )  # trailing / in config
        r = c.options("/v1/feedback", headers={"origin": "https://evil.example", **ask})
        assert r.status_code == 403 and error_code(r) == "origin_not_allowed"
        assert "access-control-allow-origin" not in r.headers


def test_post_from_an_allowed_origin_carries_cors_headers_and_others_are_refused(tmp_path: Path) -> None:
    with browser(tmp_path) as c:
        add_inference(c, "inf-cors")
        r = c.post(
            "/v1/feedback", json={"inference_id": "inf-cors", "value": "up"}, headers={"origin": APP, **PUBLISHABLE}
        )
        assert (
            r.status_code == 200 and r.headers["access-control-allow-origin"] == APP and r.headers["vary"] == "Origin"
        )
        # an error an allowed page should be able to read carries the headers too
        r = c.post(
            "/v1/feedback",
            json={"inference_id": "inf-cors", "value": "sideways"},
            headers={"origin": APP, **PUBLISHABLE},
        )
        assert r.status_code == 400 and r.headers["access-control-allow-origin"] == APP
        # a disallowed origin is refused by the server, not only by the browser (a text/plain
        # form post would arrive without a preflight)
        r = c.post("/v1/feedback", content=b'{"inference_id": "inf-cors", "value": "down"}',
                   headers={"origin": "https://evil.example", "content-type": "text/plain", **PUBLISHABLE})  # fmt: skip
        assert r.status_code == 403 and error_code(r) == "origin_not_allowed"
        # the proxy's own pages and non-browser clients need no CORS
        r = c.post("/v1/feedback", json={"inference_id": "inf-cors", "value": "down", "feedback_id": "same-origin"},
                   headers={"origin": "http://testserver"})  # fmt: skip
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        assert c.post("/v1/feedback", json={"inference_id": "inf-cors", "value": 1}).status_code == 200


def test_no_origin_is_allowed_by_default(tmp_path: Path) -> None:
    with client(tmp_path) as c:
        add_inference(c, "inf-default")
        r = c.post("/v1/feedback", json={"inference_id": "inf-default", "value": "up"}, headers={"origin": APP})
        assert r.status_code == 403 and error_code(r) == "origin_not_allowed"


def test_cors_is_on_feedback_only(tmp_path: Path) -> None:
    with browser(tmp_path) as c:
        r = c.get("/admin/specs", headers={"origin": APP, "authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        r = c.options("/v1/chat/completions", headers={"origin": APP, "access-control-request-method": "POST"})
        assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
        assert "access-control-allow-origin" not in c.get("/healthz", headers={"origin": APP}).headers


@pytest.mark.parametrize("client_keys", [[], ["sk-backend"]])
def test_a_publishable_key_may_only_send_feedback(tmp_path: Path, client_keys: list[str]) -> None:
    with browser(tmp_path, api_keys=client_keys) as c:
        add_inference(c, "inf-scope")
        r = c.post("/v1/feedback", json={"inference_id": "inf-scope", "value": "up"}, headers=PUBLISHABLE)
        assert r.status_code == 200, r.text
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for path in ("/v1/chat/completions", "/v1/responses", "/v1/completions", "/specs/support/v1/chat/completions"):
            r = c.post(path, json=chat, headers=PUBLISHABLE)
            assert r.status_code == 403 and error_code(r) == "feedback_key_scope", path
        r = c.get("/v1/models", headers=PUBLISHABLE)
        assert r.status_code == 403 and error_code(r) == "feedback_key_scope"
        for method, path in (("GET", "/admin/specs"), ("PUT", "/admin/specs/support/labels/production")):
            r = c.request(method, path, json={"version": 2}, headers=PUBLISHABLE)
            assert r.status_code == 403 and error_code(r) == "feedback_key_scope", path
        r = c.post("/console/login", data={"key": "pk-browser"})
        assert r.status_code == 401
        if client_keys:  # with client keys set, an unknown key is refused on feedback too
            r = c.post(
                "/v1/feedback",
                json={"inference_id": "inf-scope", "value": "up"},
                headers={"authorization": "Bearer nope"},
            )
            assert r.status_code == 401 and error_code(r) == "invalid_api_key"
            r = c.post(
                "/v1/feedback",
                json={"inference_id": "inf-scope", "value": "up"},
                headers={"authorization": "Bearer sk-backend"},
            )
            assert r.status_code == 200


def test_publishable_keys_are_rate_limited_per_key(tmp_path: Path) -> None:
    with browser(tmp_path, feedback_burst_per_key=2, feedback_rate_per_key=0.01) as c:
        add_inference(c, "inf-rate")
        body = {"inference_id": "inf-rate", "value": "up"}
        assert [c.post("/v1/feedback", json=body, headers=PUBLISHABLE).status_code for _ in range(2)] == [200, 200]
        r = c.post("/v1/feedback", json=body, headers={"origin": APP, **PUBLISHABLE})
        assert r.status_code == 429 and error_code(r) == "rate_limit_exceeded"
        assert int(r.headers["retry-after"]) >= 1 and r.headers["access-control-allow-origin"] == APP
        # another key has its own bucket; a backend with a client key is not limited
        assert c.post("/v1/feedback", json=body, headers={"authorization": "Bearer pk-second"}).status_code == 200
        assert c.post("/v1/feedback", json=body).status_code == 200


def test_publishable_keys_are_rate_limited_per_client_address(tmp_path: Path) -> None:
    with browser(tmp_path, feedback_burst_per_address=3, feedback_rate_per_address=0.01) as c:
        add_inference(c, "inf-addr")
        body = {"inference_id": "inf-addr", "value": "down"}
        codes = [c.post("/v1/feedback", json=body, headers={"authorization": f"Bearer {k}"}).status_code
                 for k in ("pk-browser", "pk-second", "pk-browser", "pk-second")]  # fmt: skip
        assert codes == [200, 200, 200, 429]


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=0.5, burst=2, clock=lambda: now[0])
    assert [limiter.take("k"), limiter.take("k")] == [0.0, 0.0]
    assert limiter.take("k") == pytest.approx(2.0)  # one token takes 2 s at 0.5/s
    assert retry_after(limiter.take("k")) == 2
    now[0] = 2.0
    assert limiter.take("k") == 0.0
    assert limiter.take("k") > 0
    now[0] = 100.0  # refilled, but never above the burst
    assert [limiter.take("k") for _ in range(3)][:2] == [0.0, 0.0] and limiter.take("k") > 0
    assert limiter.take("other") == 0.0
    assert retry_after(0.01) == 1


def test_token_buckets_are_bounded() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_keys=3, clock=lambda: 0.0)
    for key in "abcd":
        limiter.take(key)
    assert len(limiter._buckets) == 3 and "a" not in limiter._buckets


def test_a_key_with_non_ascii_characters_is_refused_not_a_crash(tmp_path: Path) -> None:
    """hmac.compare_digest cannot compare non-ASCII str (found by the schemathesis run)."""
    key = "Bearer cl\xe9".encode("latin-1")
    with browser(tmp_path, api_keys=["sk-backend"]) as c:
        for method, path in (("GET", "/admin/specs"), ("POST", "/v1/chat/completions"), ("POST", "/v1/feedback")):
            r = c.request(method, path, json={}, headers={"authorization": key})  # type: ignore[dict-item]
            assert r.status_code == 401, (path, r.text)


# -- the snippet in Chromium ------------------------------------------------------------------------
async def _compiler_view(data_dir: Path) -> list[tuple[str, float, str | None]]:
    """What a compile round reads: the judgments joined to their inferences."""
    ledger = SqliteLedger(data_dir / "ledger.sqlite3", flush_interval=0)
    await ledger.start()
    try:
        return [(e.inference.id, e.feedback.value, e.feedback.comment) for e in await ledger.feedback_events()]
    finally:
        await ledger.close()


@pytest.mark.timeout(240)
def test_snippet_comments_changes_and_retracts_in_chromium(
    browser_ready: None, fake_upstream: FakeUpstream, tmp_path: Path, app_origin: str
) -> None:
    proxy = start_proxy(tmp_path, fake_upstream.url, specs={"support": "You answer parcel questions."}, env={
        "SPECLEARN_API_KEYS": CLIENT_KEY, "SPECLEARN_FEEDBACK_KEYS": FEEDBACK_KEY, "SPECLEARN_CORS_ORIGINS": app_origin,
    })  # fmt: skip
    try:
        ids = {"first": chat_id(proxy.root_url), "second": chat_id(proxy.root_url)}
        for inference_id in ids.values():
            inference_row(proxy.data_dir, inference_id)
        config = {
            "proxy": proxy.root_url, "chromium": CHROMIUM, "feedbackKey": FEEDBACK_KEY, "appOrigin": app_origin,
            "inferenceIds": ids, "comment": "Shorter, and give me the tracking link.",
            "secondComment": "It answered a different question.",
            "screenshots": str(Path(os.environ.get("SPECLEARN_SCREENSHOTS") or tmp_path / "screenshots").resolve()),
        }  # fmt: skip
        result_path = tmp_path / "e2e.json"
        run = subprocess.run(
            ["node", "feedback.e2e.mjs"], cwd=BROWSER_DIR, capture_output=True, text=True, timeout=200,
            env={**os.environ, "E2E_CONFIG": json.dumps(config), "E2E_RESULT": str(result_path)},
        )  # fmt: skip
        seen = json.loads(result_path.read_text()) if result_path.exists() else {}
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\nseen: {seen}\nproxy log:\n{proxy.log()[-3000:]}"
        first, second = seen["ids"]["firstVote"], seen["ids"]["secondVote"]
        assert seen["requests"] == [
            "POST /v1/feedback", f"PUT /v1/feedback/{first}", f"PUT /v1/feedback/{first}", f"DELETE /v1/feedback/{first}",
            "POST /v1/feedback", f"PUT /v1/feedback/{second}", f"PUT /v1/feedback/{second}",
        ]  # fmt: skip
        assert len(seen["screenshots"]) == 3
        rows = {r["id"]: r for r in feedback_rows(proxy.data_dir)}
        assert set(rows) == {first, second}  # a change is made in place, never a second row
        assert rows[first]["inference_id"] == ids["first"] and rows[first]["retracted_at"] is not None
        assert rows[first]["comment"] is None  # the retraction erased the comment it had
        assert rows[second]["value"] == -1.0 and rows[second]["comment"] == config["secondComment"]
        assert rows[second]["updated_at"] > rows[second]["created_at"]
        assert rows[first]["owner"] == rows[second]["owner"] and rows[second]["owner"].startswith("pk:")
        assert rows[second]["user_id"].startswith("addr:") and "127.0.0.1" not in rows[second]["user_id"]
    finally:
        proxy.stop()
    # the compiler counts the second answer once, with its latest value, and the first not at all
    assert asyncio.run(_compiler_view(proxy.data_dir)) == [(ids["second"], -1.0, config["secondComment"])]
