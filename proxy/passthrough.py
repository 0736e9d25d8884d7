"""Endpoints the proxy forwards without a spec: `/v1/models` (plus route aliases), embeddings and
any other `/v1/*` path, relayed as bytes in both directions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response

from . import metrics
from .bodies import ClientGone, read_body
from .errors import ProxyError, ServiceUnavailable
from .responses import RelayResponse, error_response, json_response, unless_disconnected
from .state import ProxyState
from .upstream import classify

perf = time.perf_counter


async def relay(request: Request, path: str, route: str) -> Response:
    started = perf()
    state: ProxyState = request.app.state.proxy
    try:
        if state.upstream is None:
            raise ServiceUnavailable("no upstream is configured")
        forward_auth = state.check_client(request.headers.get("authorization"))
        body = await read_body(request, state.settings.max_body_bytes)
        headers = state.upstream.headers(request.headers.raw, forward_auth)
        upstream = await unless_disconnected(
            request.receive,
            state.upstream.send(request.method, path, headers, body or None, request.scope.get("query_string", b"")),
        )
    except ProxyError as exc:
        metrics.observe_request(route, "none", "none", exc.status, perf() - started, 0.0)
        return error_response(exc)
    except ClientGone:
        return Response(status_code=499)
    except Exception as exc:  # noqa: BLE001 - classify() maps any failure to the OpenAI error shape
        error, kind = classify(exc)
        metrics.count_upstream_error(route, kind)
        metrics.observe_request(route, "none", "none", error.status, perf() - started, 0.0)
        return error_response(error)
    upstream_started = perf()
    status = upstream.status

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.chunks():
                yield chunk
        finally:
            upstream.close()

    def finish(outcome: str) -> None:
        total = perf() - started
        metrics.observe_request(
            route, "none", "none", status if outcome != "cancelled" else 499, total, perf() - upstream_started
        )

    def on_error(exc: BaseException) -> None:
        metrics.count_upstream_error(route, classify(exc)[1])

    return RelayResponse(status, upstream.headers_for_client(), chunks(), finish, on_error)


async def models(request: Request) -> Response:
    """The upstream's model list plus the configured aliases, so clients can discover both."""
    state: ProxyState = request.app.state.proxy
    try:
        if state.upstream is None:
            raise ServiceUnavailable("no upstream is configured")
        forward_auth = state.check_client(request.headers.get("authorization"))
        headers = state.upstream.headers(request.headers.raw, forward_auth)
        upstream = await unless_disconnected(request.receive, state.upstream.send("GET", "/models", headers, None))
        try:
            data = await upstream.read()
        finally:
            upstream.close()
    except ProxyError as exc:
        return error_response(exc)
    except ClientGone:
        return Response(status_code=499)
    except Exception as exc:  # noqa: BLE001 - classify() maps any failure to the OpenAI error shape
        error, kind = classify(exc)
        metrics.count_upstream_error("models", kind)
        return error_response(error)
    metrics.observe_request("models", "none", "none", upstream.status, 0.0, 0.0)
    if upstream.status != 200:
        return Response(data, upstream.status, media_type=upstream.content_type)
    try:
        listing = orjson.loads(data)
        entries = listing["data"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return Response(data, 200, media_type=upstream.content_type)
    for alias, route in state.settings.routes.items():
        root = route.model or route.upstreams[0].model  # settings: one of the two is set
        entries.append({"id": alias, "object": "model", "created": 0, "owned_by": "speclearn", "root": root})
    return json_response(listing)
