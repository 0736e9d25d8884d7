"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from . import metrics
from .responses import json_response
from .state import ProxyState


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: ProxyState = request.app.state.proxy
    checks = {
        "registry": state.ready,
        "upstream": state.upstream is not None,
        "ledger_queue": state.ledger.queue_depth < state.settings.ledger_queue_size,
    }
    ok = all(checks.values())
    return json_response({"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503)


async def prometheus(request: Request) -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
