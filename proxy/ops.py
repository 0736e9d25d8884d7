"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from . import metrics
from .errors import InvalidRequest
from .responses import json_response
from .state import ProxyState


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the registry is loaded, an upstream is set, the ledger's buffer has room and its
    storage takes writes; else 503 with the reason of each failed check. Storage is asked each
    time (PostgreSQL: a `SELECT 1`), so readiness returns by itself when the database does."""
    state: ProxyState = request.app.state.proxy
    ledger = state.ledger
    storage = await ledger.storage_problem() if state.ready else None  # not open before start-up or after stop
    size = state.settings.ledger_queue_size
    reasons = {
        "registry": None if state.ready else "the spec registry is not loaded yet",
        "upstream": None if state.upstream is not None else "no upstream is configured",
        "ledger_queue": None if ledger.queue_depth < size else f"the ledger's buffer is full ({size} rows)",
        "database": storage,
    }
    # `?exclude=database&exclude=ledger_queue`, as Kubernetes components spell it: a replica that
    # can still answer while the ledger's storage is down stays in service (docs/operations.md)
    excluded = request.query_params.getlist("exclude")
    if unknown := [name for name in excluded if name not in reasons]:
        raise InvalidRequest(f"unknown readiness check {unknown[0]!r}; checks: {', '.join(reasons)}", param="exclude")
    failed = {name: why for name, why in reasons.items() if why is not None and name not in excluded}
    body: dict[str, object] = {
        "status": "not ready" if failed else "ready",
        "checks": {name: why is None for name, why in reasons.items()},
        "ledger_buffered": ledger.buffered,
    }
    if failed:
        body["reason"] = "; ".join(failed.values())
        body["reasons"] = failed
    return json_response(body, status=503 if failed else 200)


async def prometheus(request: Request) -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
