"""OpenTelemetry traces (proxy/tracing.py): a real `speclearn serve` exports over OTLP/HTTP to a
receiver on loopback that decodes the protobuf, driven by the official `openai` client."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # the `otel` extra (make test installs it)
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from helpers import REPO, FakeUpstream, ProxyProcess, free_port, start_proxy, write_spec

MESSAGES = [{"role": "user", "content": "hello from the test"}]
DEAD_URL = "http://127.0.0.1:9/v1"  # nothing listens: a connect error at once
WAIT = 30.0  # seconds to wait for a span before failing (the exporter batches every 50 ms)


@dataclass
class Exported:
    """One span as the collector received it: its attributes decoded, its resource's too."""

    span: Any
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on loopback: decodes each ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.spans: list[Exported] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                ok = self.path == "/v1/traces" and self.headers.get("Content-Type") == "application/x-protobuf"
                if ok:
                    receiver._add(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _add(self, request: Any) -> None:
        with self.changed:
            for resource_spans in request.resource_spans:
                resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        attributes = {kv.key: _value(kv.value) for kv in span.attributes}
                        self.spans.append(Exported(span, attributes, resource))
            self.changed.notify_all()

    def find(self, inference_id: str) -> list[Exported]:
        with self.changed:
            return [s for s in self.spans if s.attributes.get("speclearn.inference_id") == inference_id]

    def wait_for(self, inference_id: str) -> Exported:
        deadline = time.monotonic() + WAIT
        with self.changed:
            while not (found := [s for s in self.spans if s.attributes.get("speclearn.inference_id") == inference_id]):
                left = deadline - time.monotonic()
                assert left > 0, f"no span for {inference_id} in {WAIT} s; got {[s.span.name for s in self.spans]}"
                self.changed.wait(left)
        assert len(found) == 1, found
        return found[0]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def otel_env(receiver: OtlpReceiver) -> dict[str, str]:
    """Traces on through the standard variables alone, exported every 50 ms, nothing inherited."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_SERVICE_NAME": "",
        "OTEL_RESOURCE_ATTRIBUTES": "",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "",
    }


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def traced(
    fake_upstream: FakeUpstream, receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    routes = {
        "dead": {"upstreams": [{"url": DEAD_URL, "model": "m"}]},
        "fallback": {"upstreams": [{"url": DEAD_URL, "model": "m"}, {"url": fake_upstream.url, "model": "model-b"}]},
    }
    handle = start_proxy(
        tmp_path_factory.mktemp("traced"), fake_upstream.url,
        specs={"default": "DEFAULT SPEC TEXT", "support": "SUPPORT SPEC TEXT"},
        env={**otel_env(receiver), "SPECLEARN_UPSTREAM_RETRIES": "0", "SPECLEARN_ROUTES": json.dumps(routes)},
    )  # fmt: skip
    yield handle
    handle.stop()


def client(proxy: ProxyProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="client-key", max_retries=0)


def traceparent() -> tuple[str, str, str]:
    """A client's own trace context: (header, trace id hex, span id hex)."""
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def upstream_context(fake_upstream: FakeUpstream) -> tuple[str, str]:
    """(trace id, parent span id) of the `traceparent` the upstream last received."""
    version, trace_id, parent_id, flags = fake_upstream.last().headers["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    return trace_id, parent_id


def no_content(exported: Exported, *texts: str) -> None:
    """No prompt, spec or answer text in any attribute."""
    for key, value in exported.attributes.items():
        for text in texts:
            assert text not in str(value), (key, value)


def test_chat_span_follows_genai_conventions_and_joins_the_callers_trace(
    traced: ProxyProcess, receiver: OtlpReceiver, fake_upstream: FakeUpstream
) -> None:
    header, trace_id, parent_id = traceparent()
    raw = client(traced).chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, max_tokens=50, temperature=0.25, extra_headers={"traceparent": header}
    )
    completion = raw.parse()
    exported = receiver.wait_for(completion.id)
    span, a = exported.span, exported.attributes

    assert span.name == "chat m"
    assert span.kind == Span.SpanKind.SPAN_KIND_CLIENT
    assert span.trace_id.hex() == trace_id and span.parent_span_id.hex() == parent_id
    assert span.status.code != Status.StatusCode.STATUS_CODE_ERROR
    assert exported.resource["service.name"] == "speclearn-proxy"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == "m"
    assert a["gen_ai.request.max_tokens"] == 50 and a["gen_ai.request.temperature"] == 0.25
    assert a["gen_ai.response.model"] == completion.model == "fake-model"
    assert a["gen_ai.response.id"] == completion.id == a["speclearn.inference_id"]
    assert a["gen_ai.response.finish_reasons"] == [completion.choices[0].finish_reason] == ["stop"]
    assert completion.usage is not None
    assert a["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    assert (a["server.address"], a["server.port"]) == ("127.0.0.1", fake_upstream.port)
    assert a["speclearn.upstream"] == fake_upstream.url and a["speclearn.route"] == "default"
    name, version = raw.headers["x-spec-version"].split("@")
    assert (a["speclearn.spec.name"], a["speclearn.spec.version"]) == (name, int(version)) == ("default", 1)
    assert a["speclearn.status"] == "ok" and a["http.response.status_code"] == 200
    assert "gen_ai.request.top_p" not in a  # only what the client gave
    no_content(exported, "hello from the test", "DEFAULT SPEC TEXT", completion.choices[0].message.content or "?")

    # the upstream is called inside the span: same trace, the proxy's span as its parent
    assert upstream_context(fake_upstream) == (trace_id, span.span_id.hex())


def test_streamed_span_ends_with_the_stream(
    traced: ProxyProcess, receiver: OtlpReceiver, fake_upstream: FakeUpstream
) -> None:
    header, trace_id, parent_id = traceparent()
    stream = client(traced).chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
        extra_headers={"traceparent": header, "X-Spec": "support"},
    )  # fmt: skip
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None
    exported = receiver.wait_for(chunks[0].id)
    span, a = exported.span, exported.attributes

    assert span.name == "chat m" and span.kind == Span.SpanKind.SPAN_KIND_CLIENT
    assert span.trace_id.hex() == trace_id and span.parent_span_id.hex() == parent_id
    # known only once the stream ended: its usage chunk, its finish reason, its [DONE]
    assert a["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert a["gen_ai.response.finish_reasons"] == [c.choices[0].finish_reason for c in chunks if c.choices][-1:]
    assert a["gen_ai.response.model"] == chunks[0].model
    assert a["gen_ai.response.id"] == chunks[0].id
    assert a["speclearn.status"] == "ok"
    assert (a["speclearn.spec.name"], a["speclearn.spec.version"]) == ("support", 1)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    no_content(exported, "hello from the test", "SUPPORT SPEC TEXT", text)
    assert upstream_context(fake_upstream) == (trace_id, span.span_id.hex())


def test_a_request_without_traceparent_starts_a_trace_the_upstream_joins(
    traced: ProxyProcess, receiver: OtlpReceiver, fake_upstream: FakeUpstream
) -> None:
    completion = client(traced).chat.completions.create(model="m", messages=MESSAGES)
    span = receiver.wait_for(completion.id).span
    assert span.parent_span_id == b""
    assert upstream_context(fake_upstream) == (span.trace_id.hex(), span.span_id.hex())


def test_upstream_500_is_an_error_span(traced: ProxyProcess, receiver: OtlpReceiver) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        client(traced).chat.completions.create(model="m", messages=MESSAGES, extra_headers={"X-Fake": "status=500"})
    exported = receiver.wait_for(err.value.response.headers["x-inference-id"])
    assert exported.span.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert exported.attributes["error.type"] == "500"
    assert exported.attributes["speclearn.status"] == "error"
    assert exported.attributes["http.response.status_code"] == 500
    assert "gen_ai.usage.input_tokens" not in exported.attributes


def test_unreachable_upstream_is_an_error_span_naming_the_failure(traced: ProxyProcess, receiver: OtlpReceiver) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        client(traced).chat.completions.create(model="dead", messages=MESSAGES)
    a = receiver.wait_for(err.value.response.headers["x-inference-id"]).attributes
    assert a["error.type"] == "connect"
    assert (a["server.address"], a["server.port"], a["speclearn.route"]) == ("127.0.0.1", 9, "dead")


def test_fallback_span_names_the_upstream_and_model_that_answered(
    traced: ProxyProcess, receiver: OtlpReceiver, fake_upstream: FakeUpstream
) -> None:
    completion = client(traced).chat.completions.create(model="fallback", messages=MESSAGES)
    exported = receiver.wait_for(completion.id)
    a = exported.attributes
    assert exported.span.name == "chat model-b" and a["gen_ai.request.model"] == "model-b"
    assert (a["server.port"], a["speclearn.route"], a["speclearn.status"]) == (fake_upstream.port, "fallback", "ok")
    assert "error.type" not in a


# -- off, and the extra missing: subprocesses, so sys.modules is the proxy's own --------------------------
IN_PROCESS = """
import asyncio, json, sys
import httpx
from proxy.app import create_app

async def main():
    app = create_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            r = await client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                                  headers={"traceparent": sys.argv[1]})
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
    print(json.dumps({"status": r.status_code, "id": r.headers.get("x-inference-id"), "otel": loaded}))

asyncio.run(main())
"""


@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
def test_off_means_opentelemetry_is_never_imported(
    on: bool, fake_upstream: FakeUpstream, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    write_spec(tmp_path / "specs", "default", "DEFAULT SPEC")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPECLEARN_", "OTEL_"))}
    env.update({"SPECLEARN_UPSTREAM_URL": fake_upstream.url, "SPECLEARN_SPECS_DIR": str(tmp_path / "specs"),
                "SPECLEARN_DATA_DIR": str(tmp_path / "data")})  # fmt: skip
    if on:
        env.update({k: v for k, v in otel_env(receiver).items() if v})
    header, trace_id, _ = traceparent()
    proc = subprocess.run([sys.executable, "-c", IN_PROCESS, header], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == 200
    if on:
        assert "opentelemetry.sdk.trace" in out["otel"]
        assert receiver.wait_for(out["id"]).span.trace_id.hex() == trace_id  # flushed at shutdown
    else:
        assert out["otel"] == []
        assert fake_upstream.last().headers["traceparent"] == header  # passed through as the client sent it
        assert receiver.find(out["id"]) == []


SERVE_WITHOUT_OTEL = """
import sys
for name in ("opentelemetry", "opentelemetry.sdk", "opentelemetry.exporter"):
    sys.modules[name] = None  # the `otel` extra is not installed
from proxy.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_missing_extra_is_one_line_and_serving_goes_on(
    fake_upstream: FakeUpstream, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    write_spec(tmp_path / "specs", "default", "DEFAULT SPEC")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPECLEARN_", "OTEL_"))}
    env.update({"SPECLEARN_UPSTREAM_URL": fake_upstream.url, "SPECLEARN_SPECS_DIR": str(tmp_path / "specs"),
                "SPECLEARN_DATA_DIR": str(tmp_path / "data"), "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url})  # fmt: skip
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVE_WITHOUT_OTEL, "serve", "--port", str(port)], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        _wait_ready(f"http://127.0.0.1:{port}", process.poll)
        completion = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0).chat.completions.create(
            model="m", messages=MESSAGES
        )  # fmt: skip
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert completion.choices[0].message.content
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("warning: ") and "OTEL_EXPORTER_OTLP_ENDPOINT" in lines[0]
    assert "pip install 'speclearn[otel]'" in lines[0] and "serving without traces" in lines[0]
    assert receiver.find(completion.id) == []  # the process has exited: nothing was queued


def _wait_ready(root: str, exited: Callable[[], int | None]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert exited() is None, "the proxy exited"
        try:
            if httpx.get(root + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the proxy did not become ready")
