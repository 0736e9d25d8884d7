"""Answers to the client: JSON bodies, errors in the OpenAI shape, and a relayed stream.

Both streaming and non-streaming answers watch for the client going away and cancel the upstream
work when it does (pure ASGI: no BaseHTTPMiddleware, which hides disconnects).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .bodies import ClientGone
from .errors import ProxyError

T = TypeVar("T")
JSON = "application/json"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type=JSON)


def error_response(error: ProxyError, headers: dict[str, str] | None = None) -> Response:
    return Response(error.body(), error.status, headers, media_type=JSON)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and raising ClientGone) if the client disconnects first.

    One watcher task per request; the handler's own task runs the work, so the common path costs
    a single task creation.
    """
    task = asyncio.current_task()
    assert task is not None
    watching = [True]  # cleared on exit: a disconnect seen after `work` ends must cancel nothing

    def on_disconnect(watcher: asyncio.Future[None]) -> None:
        if watching[0] and not watcher.cancelled():
            task.cancel()

    watcher = asyncio.ensure_future(_wait_disconnect(receive))
    watcher.add_done_callback(on_disconnect)
    try:
        return await work
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            task.uncancel()
            raise ClientGone() from None
        raise
    finally:
        watching[0] = False
        watcher.cancel()


class RecordedResponse(Response):
    """A whole answer whose bookkeeping (`record`: the ledger row, the metrics) runs right after its
    bytes are handed to the server, in the same step of the event loop: the client no longer waits
    for it, and no other request (feedback on this answer included) runs in between."""

    def __init__(self, content: bytes, status: int, record: Callable[[], None]) -> None:
        super().__init__(content, status)
        self._record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._record()


class RelayResponse(Response):
    """Streams `chunks` to the client. `finish(outcome)` runs once at the end with
    "ok", "cancelled" (client left) or the error that stopped the stream."""

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        chunks: AsyncIterator[bytes],
        finish: Callable[[str], None],
        on_error: Callable[[BaseException], bytes | None],
    ) -> None:
        self.status_code = status
        self.raw_headers = headers
        self.background = None
        self._chunks = chunks
        self._finish = finish
        self._on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = "ok"
        try:
            await unless_disconnected(receive, self._stream(send))
        except ClientGone:
            outcome = "cancelled"
        except BaseException:
            outcome = "error"
            raise
        finally:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
            self._finish(outcome)

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self._chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception as exc:  # noqa: BLE001 - the stream has started: any failure ends it with its tail
            tail = self._on_error(exc)
            if tail:
                await send({"type": "http.response.body", "body": tail, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
