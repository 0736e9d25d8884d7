"""The client to the upstream model server: one pool of keep-alive connections per worker.

Callers see only this module's small API (`Upstream.send`, `UpstreamResponse`, `classify`); the
HTTP/1.1 underneath is proxy/http1.py. History of the choice, measured on the benchmark machine:
httpx first (~250 µs of CPU per request on top of aiohttp's), then aiohttp (~165 µs), now a
purpose-built client on httptools (~45 µs), since the proxy only needs bytes in, bytes out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from . import http1
from .errors import ProxyError, UpstreamTimeout, UpstreamUnavailable

# Headers that describe one hop, or that the proxy sets itself, never forwarded upstream.
DROP_REQUEST_HEADERS = frozenset(
    {
        b"host", b"content-length", b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer",
        b"upgrade", b"proxy-authorization", b"proxy-connection", b"accept-encoding", b"expect",
        b"x-spec", b"x-inference-id",
    }
)  # fmt: skip
DROP_RESPONSE_HEADERS = frozenset(
    {
        b"content-length", b"connection", b"keep-alive", b"transfer-encoding", b"content-encoding",
        b"date", b"server", b"trailer", b"upgrade",
    }
)  # fmt: skip


class UpstreamResponse:
    """An upstream answer whose status and headers have arrived; the body is read or streamed."""

    __slots__ = ("_response",)

    def __init__(self, response: http1.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def content_type(self) -> str:
        return self._response.content_type

    def headers_for_client(self) -> list[tuple[bytes, bytes]]:
        return [(k, v) for k, v in self._response.headers if k.lower() not in DROP_RESPONSE_HEADERS]

    async def read(self) -> bytes:
        return await self._response.read()

    def chunks(self) -> AsyncIterator[bytes]:
        """Bytes as they arrive, without re-chunking, so a stream's latency is the upstream's."""
        return self._response.chunks()

    def close(self) -> None:
        """Return the connection to the pool, or close it if the body was not read to the end
        (that is what tells the upstream to stop generating)."""
        self._response.release()


class Upstream:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = f"Bearer {api_key}".encode("latin-1") if api_key else None
        self._pool = http1.Pool(http1.Origin(self.base_url), connect_timeout, read_timeout, max_connections)
        self._base_path = self._pool.origin.base_path.encode("latin-1")

    def headers(
        self, client_headers: Iterable[tuple[bytes, bytes]], forward_client_auth: bool
    ) -> list[tuple[bytes, bytes]]:
        """The client's headers minus hop-by-hop ones, with the proxy's key when it has one."""
        replace_auth = self._auth is not None or not forward_client_auth
        out = [
            (k, v)
            for k, v in client_headers
            if k not in DROP_REQUEST_HEADERS and not (replace_auth and k == b"authorization")
        ]
        if self._auth is not None:
            out.append((b"Authorization", self._auth))
        out.append((b"Accept-Encoding", b"identity"))
        return out

    async def send(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes | None, query: bytes = b""
    ) -> UpstreamResponse:
        """Start a request; returns once status and headers arrive. `path` follows /v1."""
        target = self._base_path + path.encode("latin-1") + (b"?" + query if query else b"")
        return UpstreamResponse(await self._pool.request(method.encode("latin-1"), target, headers, body))

    async def aclose(self) -> None:
        await self._pool.close()


def classify(exc: BaseException) -> tuple[ProxyError, str]:
    """Map a transport failure to the client-visible error and a metric `kind`."""
    if isinstance(exc, http1.ConnectTimeout):
        return UpstreamTimeout("timed out connecting to the upstream"), "timeout"
    if isinstance(exc, (http1.ReadTimeout, asyncio.TimeoutError, TimeoutError)):
        return UpstreamTimeout("timed out waiting for the upstream"), "timeout"
    if isinstance(exc, http1.ConnectError):
        return UpstreamUnavailable(f"could not connect to the upstream: {exc}"), "connect"
    if isinstance(exc, (http1.ConnectionBroken, OSError)):
        return UpstreamUnavailable(f"the upstream connection broke: {exc}"), "reset"
    return UpstreamUnavailable(f"upstream request failed: {exc!r}"), "reset"
