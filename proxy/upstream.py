"""The client to the upstream model server: httpx's API over the aiohttp transport.

httpx's own transport collapses under concurrency (../shared/performance.md); the aiohttp
transport keeps the API and removes the cliff. Its exception mapping is coarse (a reset can
surface as `ConnectTimeout`), so `classify` looks at the underlying aiohttp error instead.
"""
from __future__ import annotations

import asyncio
from typing import Iterable

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from .errors import ProxyError, UpstreamTimeout, UpstreamUnavailable

# Headers that describe one hop, or that the proxy sets itself, never forwarded upstream.
DROP_REQUEST_HEADERS = frozenset(
    {
        "host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "trailer",
        "upgrade", "proxy-authorization", "proxy-connection", "accept-encoding", "expect",
        "x-spec", "x-inference-id",
    }
)  # fmt: skip
DROP_RESPONSE_HEADERS = frozenset(
    {
        "content-length", "connection", "keep-alive", "transfer-encoding", "content-encoding",
        "date", "server", "trailer", "upgrade",
    }
)  # fmt: skip


class Upstream:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._auth = f"Bearer {api_key}".encode() if api_key else None
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.client = httpx.AsyncClient(
            transport=transport or AiohttpTransport(limits=limits),
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout),
            limits=limits,
        )

    def url(self, path: str) -> str:
        """`path` is what follows /v1 in the client's URL."""
        return self.base_url + path

    def headers(
        self, client_headers: Iterable[tuple[bytes, bytes]], forward_client_auth: bool
    ) -> list[tuple[bytes, bytes]]:
        out = [
            (k, v)
            for k, v in client_headers
            if k not in DROP_REQUEST_HEADERS_B and (forward_client_auth or k != b"authorization")
        ]
        if self._auth is not None:
            out = [(k, v) for k, v in out if k != b"authorization"]
            out.append((b"authorization", self._auth))
        out.append((b"accept-encoding", b"identity"))
        return out

    async def send(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes | None, query: bytes = b""
    ) -> httpx.Response:
        """Start a request and return once the status and headers arrive; the body is read by the caller."""
        url = self.url(path) + ("?" + query.decode("latin-1") if query else "")
        request = self.client.build_request(method, url, headers=headers, content=body)
        return await self.client.send(request, stream=True)

    async def aclose(self) -> None:
        await self.client.aclose()


DROP_REQUEST_HEADERS_B = frozenset(h.encode() for h in DROP_REQUEST_HEADERS)


def response_headers(upstream: httpx.Response) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in upstream.headers.raw if k.lower().decode("latin-1") not in DROP_RESPONSE_HEADERS]


def classify(exc: BaseException) -> tuple[ProxyError, str]:
    """Map a transport failure to the client-visible error and a metric `kind`."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, (aiohttp.ServerTimeoutError, asyncio.TimeoutError, TimeoutError)):
            phase = "connecting to" if isinstance(cause, aiohttp.ConnectionTimeoutError) else "waiting for"
            return UpstreamTimeout(f"timed out {phase} the upstream"), "timeout"
        if isinstance(cause, aiohttp.ClientConnectorError):
            return UpstreamUnavailable(f"could not connect to the upstream: {cause.os_error}"), "connect"
        if isinstance(cause, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)):
            return UpstreamUnavailable(f"the upstream connection broke: {cause}"), "reset"
        cause = cause.__cause__
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout("timed out waiting for the upstream"), "timeout"
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnavailable(f"could not connect to the upstream: {exc}"), "connect"
    return UpstreamUnavailable(f"upstream request failed: {exc!r}"), "reset"
