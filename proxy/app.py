"""Building the ASGI app: state opened in the lifespan, errors in the OpenAI shape everywhere.

A plain Starlette app, not FastAPI: the routes are Starlette routes and the OpenAPI document is
written by hand (openapi.py), so FastAPI only added middleware layers to every request (telemetry,
body limit, an exit stack per request) that the proxy never used.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from . import metrics, tracing
from .errors import ProxyError, error_body
from .ledger import open_ledger
from .registry import open_registry
from .routes import ROUTES
from .settings import Settings
from .state import ProxyState
from .upstream import Upstream

log = logging.getLogger("speclearn")


def build_state(settings: Settings) -> ProxyState:
    upstream = None
    if settings.upstream_url:
        key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        upstream = Upstream(
            settings.upstream_url, key, settings.connect_timeout, settings.read_timeout,
            settings.max_upstream_connections,
        )  # fmt: skip
    return ProxyState(
        settings, open_registry(settings), open_ledger(settings), upstream, tracing=tracing.from_environment()
    )


def create_app(settings: Settings | None = None, state: ProxyState | None = None) -> Starlette:
    """The app; uvicorn's `--factory` calls this in each worker, so each worker owns its state."""
    state = state or build_state(settings or Settings())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.registry.listeners.append(metrics.follow_registry)
        await state.registry.start()
        await state.ledger.start()
        gc.collect()
        gc.freeze()  # start-up objects never change: keep them out of every later collection
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            await state.ledger.close()
            await state.registry.close()
            await state.upstreams.aclose()  # the default upstream's client and every route's
            if state.tracing is not None:  # the spans still queued go out before the worker exits
                await asyncio.to_thread(state.tracing.shutdown)

    app = Starlette(routes=ROUTES, lifespan=lifespan)
    app.state.proxy = state

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return Response(
            error_body(message, "invalid_request_error", None, code), exc.status_code, media_type="application/json"
        )

    async def proxy_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProxyError)
        return Response(exc.body(), exc.status, media_type="application/json")

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return Response(
            error_body("internal error in the proxy", "server_error", None, "internal_error"), 500,
            media_type="application/json",
        )  # fmt: skip

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(ProxyError, proxy_error)
    app.add_exception_handler(Exception, unexpected)
    return app
