"""The client to the upstream model server: one pooled aiohttp session per worker.

Why not httpx, as the design first said: on this machine httpx's request/response layer (even over
the aiohttp transport that fixes its pool) costs ~250 µs of CPU per request on top of aiohttp's
~120 µs — more than the whole rest of the proxy (A/B in bench/README.md). The proxy only needs
bytes in, bytes out; aiohttp directly gives that, and callers see only this module's small API.
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator, Iterable

import aiohttp
from yarl import URL

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

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def content_type(self) -> str:
        return self._response.headers.get("Content-Type", "")

    def headers_for_client(self) -> list[tuple[bytes, bytes]]:
        return [(k, v) for k, v in self._response.raw_headers if k.lower() not in DROP_RESPONSE_HEADERS]

    async def read(self) -> bytes:
        return await self._response.read()

    def chunks(self) -> AsyncIterator[bytes]:
        """Bytes as they arrive, without re-chunking, so a stream's latency is the upstream's."""
        return self._response.content.iter_any()

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
        self._auth = f"Bearer {api_key}" if api_key else None
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        """Created lazily inside the worker's event loop. No cookie jar: a proxy must never carry
        one client's upstream cookies into another client's request."""
        connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        return self._session

    def headers(self, client_headers: Iterable[tuple[bytes, bytes]], forward_client_auth: bool) -> list[tuple[str, str]]:
        """The client's headers minus hop-by-hop ones, with the proxy's key when it has one."""
        replace_auth = self._auth is not None or not forward_client_auth
        out = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in client_headers
            if k not in DROP_REQUEST_HEADERS and not (replace_auth and k == b"authorization")
        ]
        if self._auth is not None:
            out.append(("Authorization", self._auth))
        out.append(("Accept-Encoding", "identity"))
        return out

    async def send(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None, query: bytes = b""
    ) -> UpstreamResponse:
        """Start a request; returns once status and headers arrive. `path` follows /v1."""
        session = self._session or self._open()
        url = self.base_url + path + ("?" + query.decode("latin-1") if query else "")
        response = await session.request(
            method, URL(url, encoded=True), headers=headers, data=body, allow_redirects=False
        )
        return UpstreamResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def classify(exc: BaseException) -> tuple[ProxyError, str]:
    """Map a transport failure to the client-visible error and a metric `kind`."""
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError, TimeoutError)):
        phase = "connecting to" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "waiting for"
        return UpstreamTimeout(f"timed out {phase} the upstream"), "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnavailable(f"could not connect to the upstream: {exc.os_error}"), "connect"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)):
        return UpstreamUnavailable(f"the upstream connection broke: {exc}"), "reset"
    return UpstreamUnavailable(f"upstream request failed: {exc!r}"), "reset"
