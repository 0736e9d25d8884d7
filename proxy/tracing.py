"""OpenTelemetry traces: one span per inference, after the GenAI semantic conventions (`otel` extra).

On only when the standard variables say so: OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, OTEL_TRACES_EXPORTER is not `none` and OTEL_SDK_DISABLED
is not `true`. There is no SPECLEARN_* setting: whoever runs a collector already sets these, and the
SDK reads the rest itself (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS, the sampler, the batch
schedule). Off, nothing imports opentelemetry and an inference pays an `is None` test at each hook
(`ProxyState.tracing`, then `Call.span`): no header is parsed, no object made.

The span starts when the request arrived, is parented on the client's `traceparent` (W3C trace
context, or whatever OTEL_PROPAGATORS names), covers retries and fallback, and ends when the answer,
a stream's last event included, has been passed on. The upstream gets the span's own `traceparent` in
place of the client's, so an upstream that traces joins the same trace. The span carries names,
counts and ids, never prompt, spec or answer text, nor the end user or session.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .extras import MissingExtra
from .sse import EventHandler

if TYPE_CHECKING:
    from .inference import Call

DEFAULT_SERVICE_NAME = "speclearn-proxy"
PROVIDER = "openai"  # the API the upstream speaks, whatever serves it (gen_ai.provider.name)
# gen_ai.operation.name per endpoint: the Responses API is a chat too; legacy completions are not
OPERATIONS = {"chat": "chat", "responses": "chat", "completions": "text_completion"}
# request fields copied to the span: body key -> attribute (the first key present wins)
REQUEST_NUMBERS = (
    (("max_completion_tokens", "max_tokens", "max_output_tokens"), "gen_ai.request.max_tokens"),
    (("temperature",), "gen_ai.request.temperature"),
    (("top_p",), "gen_ai.request.top_p"),
    (("frequency_penalty",), "gen_ai.request.frequency_penalty"),
    (("presence_penalty",), "gen_ai.request.presence_penalty"),
    (("seed",), "gen_ai.request.seed"),
)
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def wanted(environ: Mapping[str, str] = os.environ) -> str | None:
    """The OTLP endpoint variable that turns traces on, or None when they are off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    return next((name for name in ENDPOINT_VARIABLES if environ.get(name)), None)


def check_extra(environ: Mapping[str, str] = os.environ) -> None:
    """Raise MissingExtra if traces are asked for but the `otel` extra is not installed (the CLI
    says so in one line at start, and serves untraced)."""
    variable = wanted(environ)
    if variable is None:
        return
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise MissingExtra("otel", f"traces ({variable} is set)") from None


def from_environment() -> Tracing | None:
    """This worker's tracing when the environment asks for it and the extra is installed."""
    if wanted() is None:
        return None
    try:
        return Tracing.otlp()
    except ImportError:  # `speclearn serve` has said so once, at start
        return None


class Tracing:
    """The tracer and the propagator, built once per worker; `shutdown` exports what is queued."""

    __slots__ = ("_provider", "_tracer", "_propagator", "_fields", "_set_span_in_context", "_client_kind")

    def __init__(self, provider: Any) -> None:
        from opentelemetry import propagate, trace

        self._provider = provider
        self._tracer = provider.get_tracer("speclearn.proxy")
        self._propagator = propagate.get_global_textmap()
        self._fields = frozenset(name.lower().encode("latin-1") for name in self._propagator.fields)
        self._set_span_in_context = trace.set_span_in_context
        self._client_kind = trace.SpanKind.CLIENT

    @classmethod
    def otlp(cls) -> Tracing:
        """Spans batched (OTEL_BSP_*) to OTLP over http/protobuf, configured by the OTEL_* variables."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider)

    def start(self, call: Call, request_headers: Mapping[str, str], route: str) -> InferenceSpan:
        """The span of `call`, begun when its request arrived, as a child of the client's trace."""
        operation = OPERATIONS.get(call.endpoint.route, "chat")
        model = call.model if isinstance(call.model, str) else None
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.system": PROVIDER,  # the name before gen_ai.provider.name, still read by many backends
            "speclearn.inference_id": call.id,
            "speclearn.endpoint": call.endpoint.route,
            "speclearn.route": route,
        }
        if model:
            attributes["gen_ai.request.model"] = model
        attributes.update(_request_attributes(call.request))
        if call.spec is not None:
            attributes["speclearn.spec.name"] = call.spec.name
            attributes["speclearn.spec.version"] = call.spec.version
        if call.arm is not None:
            attributes["speclearn.spec.arm"] = call.arm
        span = self._tracer.start_span(
            f"{operation} {model}" if model else operation,
            context=self._propagator.extract(request_headers),
            kind=self._client_kind,
            attributes=attributes,
            start_time=int(call.created_at * 1e9),
        )
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._set_span_in_context(span))
        outgoing = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items()]
        return InferenceSpan(span, self._fields, outgoing, call.id if call.endpoint.rewrite_id else None, model)

    def shutdown(self) -> None:
        """Export the spans still queued, then stop the exporter (blocking: run it off the loop)."""
        self._provider.shutdown()


class InferenceSpan:
    """One inference's span while it is in flight: what the answer says is noted, then `end`."""

    __slots__ = ("span", "_fields", "_outgoing", "response_id", "response_model", "finish_reasons", "_model")

    def __init__(
        self, span: Any, fields: frozenset[bytes], outgoing: list[tuple[bytes, bytes]], response_id: str | None,
        model: str | None,
    ) -> None:  # fmt: skip
        self.span = span
        self._fields = fields
        self._outgoing = outgoing
        self.response_id = response_id  # the id the client sees: the inference id where the proxy rewrites it
        self.response_model: str | None = None
        self.finish_reasons: dict[int, str] = {}
        self._model = model

    def upstream_headers(self, client_headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The client's headers with this span's trace context in place of the client's."""
        return [(k, v) for k, v in client_headers if k.lower() not in self._fields] + self._outgoing

    def answer(self, parsed: Any) -> None:
        """Note what a whole (non-streamed) answer says: its id, model and finish reasons."""
        if not isinstance(parsed, dict):
            return
        if self.response_id is None and isinstance(parsed.get("id"), str):
            self.response_id = parsed["id"]
        self._note(parsed)

    def watch(self, handler: EventHandler) -> EventHandler:
        """`handler` for a stream's events, noting the model, finish reasons and (Responses API) id."""

        def handle(event: bytes, parsed: dict[str, Any]) -> bytes:
            response = parsed.get("response")
            if isinstance(response, dict):  # Responses API events carry the response object
                if self.response_id is None and isinstance(response.get("id"), str):
                    self.response_id = response["id"]
                self._note(response)
            else:
                self._note(parsed)
            return handler(event, parsed)

        return handle

    def _note(self, obj: dict[str, Any]) -> None:
        model = obj.get("model")
        if self.response_model is None and isinstance(model, str):
            self.response_model = model
        for choice in obj.get("choices") or ():
            if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
                index = choice.get("index", 0)
                self.finish_reasons[index if isinstance(index, int) else 0] = choice["finish_reason"]
        fingerprint = obj.get("system_fingerprint")
        if isinstance(fingerprint, str):
            self.span.set_attribute("openai.response.system_fingerprint", fingerprint)
        tier = obj.get("service_tier")
        if isinstance(tier, str):
            self.span.set_attribute("openai.response.service_tier", tier)

    def end(
        self, call: Call, status: str, http_status: int, usage: dict[str, Any] | None, model: str | None,
        kind: str | None,
    ) -> None:  # fmt: skip
        """Close the span with the outcome the ledger row records (`status`, as in the ledger)."""
        span = self.span
        attributes: dict[str, Any] = {"speclearn.status": status, "http.response.status_code": http_status}
        if isinstance(call.model, str) and call.model != self._model:  # a fallback upstream's model
            attributes["gen_ai.request.model"] = call.model
            span.update_name(f"{OPERATIONS.get(call.endpoint.route, 'chat')} {call.model}")
        if call.upstream:
            attributes["speclearn.upstream"] = call.upstream
            address, port = _server(call.upstream)
            if address:
                attributes["server.address"] = address
                attributes["server.port"] = port
        if self.response_id is not None:
            attributes["gen_ai.response.id"] = self.response_id
        response_model = self.response_model or model
        if isinstance(response_model, str):
            attributes["gen_ai.response.model"] = response_model
        if self.finish_reasons:
            attributes["gen_ai.response.finish_reasons"] = [self.finish_reasons[i] for i in sorted(self.finish_reasons)]
        if usage:
            attributes.update(_usage_attributes(usage))
        if status not in ("ok", "cancelled"):
            error_type = kind or (
                str(http_status) if http_status >= 400 else "upstream_error" if status == "error" else "broken_stream"
            )
            attributes["error.type"] = error_type
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR))
        span.set_attributes(attributes)
        span.end()


def _request_attributes(request: dict[str, Any]) -> dict[str, Any]:
    """What the client asked for, besides the model and the messages."""
    out: dict[str, Any] = {}
    for keys, attribute in REQUEST_NUMBERS:
        for key in keys:
            value = request.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[attribute] = value
                break
    n = request.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        out["gen_ai.request.choice.count"] = n
    stop = request.get("stop")
    if isinstance(stop, str):
        out["gen_ai.request.stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        out["gen_ai.request.stop_sequences"] = stop
    fmt = request.get("response_format")
    if not isinstance(fmt, dict) and isinstance(request.get("text"), dict):  # Responses API: text.format
        fmt = request["text"].get("format")
    if isinstance(fmt, dict) and isinstance(fmt.get("type"), str):
        out["gen_ai.output.type"] = "text" if fmt["type"] == "text" else "json"
    tier = request.get("service_tier")
    if isinstance(tier, str) and tier != "auto":
        out["openai.request.service_tier"] = tier
    return out


def _usage_attributes(usage: dict[str, Any]) -> dict[str, int]:
    """Token counts from a chat/completions usage (prompt/completion) or a Responses one (input/output)."""
    out: dict[str, int] = {}
    for keys, attribute in (
        (("prompt_tokens", "input_tokens"), "gen_ai.usage.input_tokens"),
        (("completion_tokens", "output_tokens"), "gen_ai.usage.output_tokens"),
    ):
        for key in keys:
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                out[attribute] = value
                break
    return out


@lru_cache(maxsize=256)
def _server(url: str) -> tuple[str | None, int]:
    """server.address and server.port of an upstream URL (parsed once per upstream)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)
