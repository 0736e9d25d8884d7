"""The feedback API: values, idempotency, the race with the inference write, unknown ids, durability."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from helpers import REPO, FakeUpstream, ProxyProcess, start_proxy
from ledger_reader import feedback_rows, inference_row

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def proxy(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    # a slow flush makes the feedback-before-inference race the normal case
    handle = start_proxy(
        tmp_path_factory.mktemp("feedback"), fake_upstream.url,
        tuning={"ledger_flush_interval": 0.5, "feedback_wait_seconds": 0.5},
    )  # fmt: skip
    yield handle
    handle.stop()


def chat(proxy: ProxyProcess, **headers: str) -> str:
    r = httpx.post(proxy.base_url + "/chat/completions", json={"model": "m", "messages": MESSAGES}, headers=headers)
    assert r.status_code == 200
    return r.headers["x-inference-id"]


def feedback(proxy: ProxyProcess, body: Any) -> httpx.Response:
    return httpx.post(proxy.base_url + "/feedback", json=body)


@pytest.mark.parametrize(
    ("value", "kind", "stored"),
    [("up", "thumb", 1.0), ("down", "thumb", -1.0), (True, "thumb", 1.0), (False, "thumb", -1.0),
     (1, "thumb", 1.0), (-1, "thumb", -1.0), (0.25, "score", 0.25), (7, "score", 7.0)],
)  # fmt: skip
def test_values_are_normalised(proxy: ProxyProcess, value: Any, kind: str, stored: float) -> None:
    inference_id = chat(proxy)
    r = feedback(proxy, {"inference_id": inference_id, "value": value, "feedback_id": f"v-{inference_id}"})
    assert r.status_code == 200, r.text
    row = next(f for f in feedback_rows(proxy.data_dir) if f["id"] == f"v-{inference_id}")
    assert (row["kind"], row["value"]) == (kind, stored)


def test_feedback_before_inference_is_flushed_is_accepted_and_joined(proxy: ProxyProcess) -> None:
    inference_id = chat(proxy)  # still in the write queue (flush interval 0.5 s)
    r = feedback(proxy, {"inference_id": inference_id, "value": "up", "comment": "great", "tags": {"app": "t"}})
    assert r.status_code == 200
    inference_row(proxy.data_dir, inference_id)  # joined once the batch lands
    export = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "feedback", "export"], env=proxy.env, cwd=REPO,
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    events = [orjson.loads(line) for line in export.splitlines()]
    joined = next(e for e in events if e["inference"]["id"] == inference_id)
    assert joined["comment"] == "great" and joined["tags"] == {"app": "t"}
    assert joined["inference"]["request"]["messages"] == MESSAGES
    assert joined["inference"]["spec_name"] == "default"


def test_same_feedback_id_is_idempotent(proxy: ProxyProcess) -> None:
    inference_id = chat(proxy)
    body = {"inference_id": inference_id, "value": "down", "feedback_id": "idem-1"}
    first, second = feedback(proxy, body), feedback(proxy, body)
    assert first.json() == {"feedback_id": "idem-1", "status": "created"}
    assert second.json() == {"feedback_id": "idem-1", "status": "duplicate"}
    assert [f["id"] for f in feedback_rows(proxy.data_dir)].count("idem-1") == 1


def test_concurrent_retries_store_one_row(proxy: ProxyProcess) -> None:
    inference_id = chat(proxy)
    body = {"inference_id": inference_id, "value": "up", "feedback_id": "race-1"}
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(feedback(proxy, body).status_code)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8
    assert [f["id"] for f in feedback_rows(proxy.data_dir)].count("race-1") == 1


def test_same_feedback_id_with_other_judgment_is_409(proxy: ProxyProcess) -> None:
    inference_id = chat(proxy)
    assert feedback(proxy, {"inference_id": inference_id, "value": "up", "feedback_id": "c-1"}).status_code == 200
    r = feedback(proxy, {"inference_id": inference_id, "value": "down", "feedback_id": "c-1"})
    assert r.status_code == 409 and r.json()["error"]["param"] == "feedback_id"


def test_pairwise_judgment(proxy: ProxyProcess) -> None:
    a, b = chat(proxy), chat(proxy)
    r = feedback(proxy, {"chosen_id": a, "rejected_id": b, "feedback_id": "pair-1"})
    assert r.status_code == 200
    row = next(f for f in feedback_rows(proxy.data_dir) if f["id"] == "pair-1")
    assert (row["kind"], row["inference_id"], row["rejected_id"]) == ("pair", a, b)


def test_unknown_inference_is_404_after_bounded_wait(proxy: ProxyProcess) -> None:
    r = feedback(proxy, {"inference_id": "never-existed", "value": "up"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "inference_not_found"
    r = feedback(proxy, {"chosen_id": chat(proxy), "rejected_id": "never-existed"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "rejected_id"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"inference_id": "x", "value": "meh"}, "'value' must be"),
        ({"inference_id": "x", "value": None}, "'value' must be"),
        ({"inference_id": "x", "value": [1]}, "'value' must be"),
        ({"inference_id": "x"}, "'value' is required"),
        ({"value": "up"}, "'inference_id' is required"),
        ({"inference_id": 5, "value": "up"}, "'inference_id' must be"),
        ({"inference_id": "x", "value": "up", "tags": {"a": 1}}, "'tags' must be"),
        ({"inference_id": "x", "value": "up", "comment": 3}, "'comment' must be"),
        ({"inference_id": "x\u0000y", "value": "up"}, "'inference_id' must be"),
        ({"inference_id": "x", "value": "up", "feedback_id": "a b"}, "'feedback_id' must be"),
        ({"inference_id": "x", "value": "up", "comment": "c" * 8001}, "longer than"),
        ({"inference_id": "x", "value": "up", "colour": "red"}, "unknown field"),
        ({"chosen_id": "x"}, "both 'chosen_id' and 'rejected_id'"),
        ({"chosen_id": "x", "rejected_id": "x"}, "must differ"),
    ],
)
def test_bad_feedback_gets_a_precise_400(proxy: ProxyProcess, body: dict[str, Any], needle: str) -> None:
    r = feedback(proxy, body)
    assert r.status_code == 400
    assert needle in r.json()["error"]["message"]


def test_nan_and_oversize_feedback(proxy: ProxyProcess) -> None:
    r = httpx.post(proxy.base_url + "/feedback", content=b'{"inference_id": "x", "value": NaN}')
    assert r.status_code == 400
    r = feedback(proxy, {"inference_id": "x", "value": "up", "comment": "x" * 70_000})
    assert r.status_code == 413


def test_kill_9_right_after_ack_loses_no_feedback(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    proxy = start_proxy(tmp_path, fake_upstream.url, tuning={"ledger_flush_interval": 0.01})
    acknowledged = []
    try:
        ids = [chat(proxy) for _ in range(5)]
        for i in range(40):
            r = feedback(
                proxy, {"inference_id": ids[i % 5], "value": "up" if i % 2 else "down", "feedback_id": f"k-{i}"}
            )
            assert r.status_code == 200
            acknowledged.append(f"k-{i}")
    finally:
        proxy.kill()  # SIGKILL right after the last 2xx: no shutdown hook runs
    stored = {f["id"] for f in feedback_rows(proxy.data_dir)}
    assert set(acknowledged) <= stored


def test_proxy_keys_and_admin_key(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    proxy = start_proxy(
        tmp_path, fake_upstream.url,
        env={"SPECLEARN_API_KEYS": "k1,k2", "SPECLEARN_ADMIN_KEY": "adm", "SPECLEARN_UPSTREAM_API_KEY": "up-key"},
    )  # fmt: skip
    try:
        body = {"model": "m", "messages": MESSAGES}
        url = proxy.base_url + "/chat/completions"
        assert httpx.post(url, json=body).status_code == 401
        assert httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(url, json=body, headers={"Authorization": "Bearer k2"}).status_code == 200
        sent = {k.lower(): v for k, v in fake_upstream.last().headers.items()}
        assert sent["authorization"] == "Bearer up-key"  # the proxy's key, never the client's
        # client keys do not open the admin API; the admin key does
        admin = proxy.root_url + "/admin/specs/default/versions"
        assert httpx.post(admin, json={"text": "v2"}, headers={"Authorization": "Bearer k1"}).status_code == 401
        r = httpx.post(
            admin, json={"text": "V2 SPEC", "labels": ["production"]}, headers={"Authorization": "Bearer adm"}
        )
        assert r.status_code == 201 and r.json()["version"] == 2
        r = httpx.get(proxy.root_url + "/admin/feedback/export", headers={"Authorization": "Bearer adm"})
        assert r.status_code == 200
        assert "k1" not in proxy.log() and "adm" not in proxy.log().replace("admin", "")
    finally:
        proxy.stop()
