"""One inference through the proxy: authenticate, route, inject, forward, relay, then record.

The three spec-aware OpenAI endpoints differ only in the `Endpoint` facts below; everything else
(timing, ledger row, metrics, failure mapping) is shared so they cannot drift apart.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from . import metrics, routing, sse
from .bodies import (
    ID_RE,
    ID_RULE,
    ClientGone,
    read_json_object,
    validate_chat,
    validate_completions,
    validate_responses,
)
from .errors import InvalidRequest, ProxyError, ServiceUnavailable
from .identity import request_user
from .injection import inject_chat, inject_responses
from .ledger import InferenceRecord
from .registry import SpecVersion
from .responses import RecordedResponse, RelayResponse, error_response, unless_disconnected
from .routing import version_label
from .state import ProxyState
from .tracing import InferenceSpan
from .upstream import UpstreamResponse, classify
from .upstreams import UpstreamFailed
from .upstreams import exchange as upstreams_exchange

perf = time.perf_counter
CLIENT_GONE = 499  # nginx's convention: the client closed the request


@dataclass(frozen=True, slots=True)
class Endpoint:
    route: str  # metric label
    path: str  # upstream path after /v1
    validate: Callable[[dict[str, Any]], None]
    inject: Callable[[dict[str, Any], str, Any], None] | None
    id_prefix: str
    rewrite_id: bool  # the answer's `id` becomes the inference id


CHAT = Endpoint("chat", "/chat/completions", validate_chat, inject_chat, "chatcmpl-", True)
RESPONSES = Endpoint("responses", "/responses", validate_responses, inject_responses, "inf-", False)
COMPLETIONS = Endpoint("completions", "/completions", validate_completions, None, "cmpl-", True)


class Call:
    """An inference in flight: collects what the ledger row and the metrics need."""

    __slots__ = (
        "state", "endpoint", "id", "started", "created_at", "spec", "version", "model", "request",
        "metadata", "upstream_started", "upstream_seconds", "headers", "finished", "unit", "arm", "upstream", "span",
    )  # fmt: skip

    def __init__(self, state: ProxyState, endpoint: Endpoint, inference_id: str, started: float) -> None:
        self.state = state
        self.endpoint = endpoint
        self.id = inference_id
        self.started = started
        self.created_at = time.time()
        self.spec: SpecVersion | None = None
        self.version = "none"
        self.model: str | None = None
        self.request: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}
        self.upstream_started = 0.0
        self.upstream_seconds = 0.0
        self.headers = {"x-inference-id": inference_id, "x-spec-version": "none"}
        self.finished = False
        self.unit = routing.REQUEST  # the canary's assignment unit: user | session | request
        self.arm: str | None = None  # candidate | production, None when the client pinned a version
        self.upstream: str | None = None  # the upstream that answered (or failed last)
        self.span: InferenceSpan | None = None  # set only when traces are on (proxy/tracing.py)

    @property
    def spec_name(self) -> str:
        return self.spec.name if self.spec else "none"

    def overhead_header(self) -> tuple[bytes, bytes]:
        overhead = perf() - self.started - self.upstream_seconds
        return b"x-speclearn-overhead-ms", f"{overhead * 1000:.3f}".encode()

    def finish(
        self,
        status: str,
        http_status: int,
        *,
        text: str | None = None,
        tool_calls: list[Any] | None = None,
        usage: dict[str, Any] | None = None,
        error: str | None = None,
        ttft: float | None = None,
        model: str | None = None,
        kind: str | None = None,
    ) -> None:
        """Record the outcome once; `kind` is the failure's metric kind, the span's error.type."""
        if self.finished:
            return
        self.finished = True
        if self.span is not None:
            self.span.end(self, status, http_status, usage, model, kind)
        total = perf() - self.started
        route = self.endpoint.route
        metrics.observe_request(route, self.spec_name, self.version, http_status, total, self.upstream_seconds)
        if ttft is not None:
            metrics.observe_ttft(route, self.spec_name, self.version, ttft - self.started)
        if usage:
            metrics.count_tokens(usage, self.spec_name, self.version, model or self.model)
        spec = self.spec
        self.state.ledger.record(
            InferenceRecord(
                id=self.id,
                created_at=self.created_at,
                route=route,
                model=model or self.model,
                spec_name=spec.name if spec else None,
                spec_version=spec.version if spec else None,
                spec_hash=spec.sha256 if spec else None,
                request=self.request,
                response_text=text,
                tool_calls=tool_calls,
                usage=usage,
                latency_ms=total * 1000,
                ttft_ms=(ttft - self.started) * 1000 if ttft is not None else None,
                status=status,
                http_status=http_status,
                error=error,
                metadata=self.metadata,
                assignment_unit=self.unit,
                arm=self.arm,
                upstream=self.upstream,
            )
        )


def _client_metadata(body: dict[str, Any], user: str | None, session: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if user:
        meta["user"] = user
    if session:
        meta["session"] = session
    if isinstance(body.get("metadata"), dict):
        meta["metadata"] = body["metadata"]
    return meta


async def handle(request: Request, endpoint: Endpoint) -> Response:
    started = perf()
    state: ProxyState = request.app.state.proxy
    client_id = request.headers.get("x-inference-id")
    inference_id = client_id or endpoint.id_prefix + os.urandom(16).hex()
    call = Call(state, endpoint, inference_id, started)
    try:
        if client_id is not None and not ID_RE.match(client_id):
            raise InvalidRequest(f"X-Inference-Id must be {ID_RULE}", param="X-Inference-Id")
        if state.upstream is None:
            raise ServiceUnavailable("no upstream is configured")
        forward_auth = state.check_client(request.headers.get("authorization"))
        body = await read_json_object(request, state.settings.max_body_bytes)
        endpoint.validate(body)
        user = request_user(body, request.headers)
        session = request.headers.get("x-session-id")
        if user:
            call.unit, unit_id = routing.USER, user
        elif session:
            call.unit, unit_id = routing.SESSION, session
        else:
            unit_id = None
        snapshot = state.registry.snapshot
        target = routing.resolve(
            snapshot, state.settings, request.headers.get("x-spec"), request.path_params.get("spec"), body.get("model"),
            unit_id,
        )  # fmt: skip
    except ProxyError as exc:
        metrics.observe_request(endpoint.route, "none", "none", exc.status, perf() - started, 0.0)
        return error_response(exc, call.headers)
    except ClientGone:
        return Response(status_code=CLIENT_GONE)

    call.spec = target.spec
    call.arm = target.arm if target.spec is not None else None
    call.version = version_label(snapshot, target.spec.name, target.spec.version) if target.spec else "none"
    call.headers["x-spec-version"] = target.version_header
    call.request = dict(body)
    call.metadata = _client_metadata(body, user, session)
    if target.upstream_model:
        body["model"] = target.upstream_model
    call.model = body.get("model")
    if target.spec is not None and endpoint.inject is not None:
        endpoint.inject(body, target.spec.text, target.injection)
    return await _forward(request, call, body, forward_auth)


async def _forward(request: Request, call: Call, body: dict[str, Any], forward_auth: bool) -> Response:
    """Send to the route's upstreams (retries and fallback in upstreams.exchange), then relay."""
    upstreams = call.state.upstreams
    hops = upstreams.hops(call.request.get("model"))
    client_headers = request.headers.raw
    if call.state.tracing is not None:
        call.span = call.state.tracing.start(call, request.headers, hops[0].route if hops else "default")
        client_headers = call.span.upstream_headers(client_headers)
    exchange = upstreams_exchange(
        upstreams, hops, call.endpoint.path, client_headers, forward_auth, body, body.get("stream") is True
    )
    call.upstream_started = perf()
    try:
        answer = await unless_disconnected(request.receive, exchange)
    except ClientGone:
        call.upstream_seconds = perf() - call.upstream_started
        call.finish("cancelled", CLIENT_GONE, error="client disconnected")
        return Response(status_code=CLIENT_GONE)
    except UpstreamFailed as exc:
        call.upstream_seconds = perf() - call.upstream_started
        call.upstream = exc.hop.name
        error, kind = classify(exc.cause)
        metrics.count_upstream_error(call.endpoint.route, kind)
        call.finish("error", error.status, error=error.message, kind=kind)
        return error_response(error, call.headers)
    upstream, data = answer.response, answer.data
    call.upstream = answer.hop.name
    call.model = body.get("model")
    if data is None:
        return _relay_stream(call, upstream)
    call.upstream_seconds = perf() - call.upstream_started
    return _complete(call, upstream, data)


def _complete(call: Call, upstream: UpstreamResponse, data: bytes) -> Response:
    """A whole (non-streamed) answer: pass it on, with our id in it, then record it."""
    status = upstream.status
    parsed: Any = None
    if upstream.content_type.startswith("application/json"):
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
    if status < 400 and isinstance(parsed, dict) and call.endpoint.rewrite_id and "id" in parsed:
        parsed["id"] = call.id
        data = orjson.dumps(parsed)
    response = RecordedResponse(data, status, lambda: _record_complete(call, status, parsed, data))
    response.raw_headers.extend(upstream.headers_for_client())
    response.raw_headers.extend((k.encode(), v.encode()) for k, v in call.headers.items())
    response.raw_headers.append(call.overhead_header())
    return response


def _record_complete(call: Call, status: int, parsed: Any, data: bytes) -> None:
    if status >= 400:
        metrics.count_upstream_error(call.endpoint.route, "status_5xx" if status >= 500 else "status_4xx")
        message = _error_message(parsed) or data[:500].decode("utf-8", "replace")
        call.finish("error", status, error=message)
        return
    text = tool_calls = usage = model = None
    if call.span is not None:
        call.span.answer(parsed)
    if isinstance(parsed, dict):
        text, tool_calls = _answer_of(parsed)
        usage = parsed.get("usage") if isinstance(parsed.get("usage"), dict) else None
        model = parsed.get("model") if isinstance(parsed.get("model"), str) else None
    call.finish("ok", status, text=text, tool_calls=tool_calls, usage=usage, model=model)


def _error_message(parsed: Any) -> str | None:
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        message = parsed["error"].get("message")
        return message if isinstance(message, str) else None
    return None


def _answer_of(parsed: dict[str, Any]) -> tuple[str | None, list[Any] | None]:
    """The first choice's text and tool calls (chat, completions) or the output text (responses)."""
    choices = parsed.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        message = first.get("message")
        if isinstance(message, dict):
            return message.get("content"), message.get("tool_calls")
        return first.get("text"), None
    output = parsed.get("output")
    if isinstance(output, list):
        parts = [
            part.get("text", "")
            for item in output
            if isinstance(item, dict) and item.get("type") == "message"
            for part in item.get("content") or ()
            if isinstance(part, dict) and part.get("type") == "output_text"
        ]
        return "".join(parts), None
    return None, None


def _relay_stream(call: Call, upstream: UpstreamResponse) -> Response:
    capture = sse.StreamCapture()
    if call.endpoint.route == "responses":
        handler = sse.responses_events(capture)
    else:
        handler = sse.chat_events(capture, b'"' + call.id.encode() + b'"' if call.endpoint.rewrite_id else None)
    if call.span is not None:
        handler = call.span.watch(handler)
    events = sse.relay(upstream.chunks(), capture, handler)
    failure: list[tuple[str, str]] = []

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                yield event
        finally:
            call.upstream_seconds = perf() - call.upstream_started
            upstream.close()

    def on_error(exc: BaseException) -> bytes:
        if isinstance(exc, sse.BrokenStream):
            kind, message = exc.kind, str(exc)
        else:
            error, kind = classify(exc)
            message = f"the stream broke: {error.message}"
        failure.append((kind, message))
        metrics.count_upstream_error(call.endpoint.route, "broken_stream")
        return sse.error_event(message, kind)

    def finish(outcome: str) -> None:
        if failure:
            status, error = "incomplete", failure[0][1]
        elif outcome == "cancelled":
            status, error = "cancelled", "client disconnected"
        elif outcome == "error" or not capture.finished:
            status, error = "incomplete", "stream did not complete"
        else:
            status, error = ("error" if capture.upstream_error else "ok"), None
        call.finish(
            status,
            CLIENT_GONE if outcome == "cancelled" else 200,
            text=capture.text,
            tool_calls=capture.tool_call_list(),
            usage=capture.usage,
            error=error,
            ttft=capture.first_token_at,
            kind=failure[0][0] if failure else None,
        )

    headers = upstream.headers_for_client()
    headers.extend((k.encode(), v.encode()) for k, v in call.headers.items())
    headers.append(call.overhead_header())
    return RelayResponse(200, headers, chunks(), finish, on_error)
