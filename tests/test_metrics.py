"""/metrics, parsed with prometheus-client's own parser, with two uvicorn workers."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from helpers import FakeUpstream, start_proxy

MESSAGES = [{"role": "user", "content": "hello"}]


def samples(text: str) -> dict[str, list]:  # type: ignore[type-arg]
    out: dict[str, list] = {}  # type: ignore[type-arg]
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def value(found: dict[str, list], name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return sum(s.value for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_aggregate_over_two_workers(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    proxy = start_proxy(tmp_path, fake_upstream.url, workers=2)
    try:
        with httpx.Client() as client:  # new connections spread over both workers
            for _ in range(40):
                client.post(
                    proxy.base_url + "/chat/completions",
                    json={"model": "m", "messages": MESSAGES},
                    headers={"Connection": "close"},
                )
            r = client.post(
                proxy.base_url + "/chat/completions",
                json={"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
            )
            client.post(
                proxy.base_url + "/chat/completions",
                json={"model": "m", "messages": MESSAGES},
                headers={"X-Fake": "status=500"},
            )
            inference_id = r.headers["x-inference-id"]
            assert (
                client.post(
                    proxy.base_url + "/feedback", json={"inference_id": inference_id, "value": "up"}
                ).status_code
                == 200
            )
        text = httpx.get(proxy.root_url + "/metrics").text
        found = samples(text)
        ok = value(found, "speclearn_requests_total", route="chat", spec="default", version="1", status="200")
        assert ok == 41
        assert value(found, "speclearn_requests_total", route="chat", status="500") == 1
        assert value(found, "speclearn_request_duration_seconds_count", route="chat") == 42
        assert value(found, "speclearn_overhead_seconds_count", route="chat") == 42
        assert value(found, "speclearn_ttft_seconds_count", route="chat") == 1
        assert value(found, "speclearn_tokens_total", direction="in", spec="default") == 7 * 41
        assert value(found, "speclearn_upstream_errors_total", route="chat", kind="status_5xx") == 1
        assert value(found, "speclearn_feedback_total", spec="default", version="1", kind="thumb", value="up") == 1
        assert value(found, "speclearn_spec_active_version", spec="default", label="production") == 1
        assert value(found, "speclearn_spec_tokens", spec="default", version="1") > 0  # set on reload
        assert value(found, "speclearn_registry_reloads_total") >= 2  # one per worker
        pids = {line for line in proxy.log().splitlines() if "Started server process" in line}
        assert len(pids) == 2, "both workers served"
    finally:
        proxy.stop()
