"""The proxy's HTTP/1.1 upstream client (proxy/http1.py) against a scripted server on loopback:
framing (length, chunked, until close, no body), keep-alive reuse and when it must not happen,
the pool's bound, timeouts, and broken or hostile answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from proxy import http1
from proxy.upstream import Upstream, classify

Reply = Callable[[bytes], bytes | None]  # the request bytes -> what to answer (None: stay silent)


@dataclass
class Server:
    """Answers each request on a connection with `reply(request)`; counts connections and EOFs."""

    reply: Reply
    connections: int = 0
    eofs: int = 0
    requests: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self.reply(request)
                if answer is None:
                    continue
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eofs += 1
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Reply], asyncio.Future[Server]]]:
    servers: list[asyncio.AbstractServer] = []

    async def start(reply: Reply) -> Server:
        state = Server(reply)
        server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
        state.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return state

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> Reply:
    return lambda _: (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def pool(server: Server, read_timeout: float = 5.0, limit: int = 10) -> http1.Pool:
    return http1.Pool(http1.Origin(f"http://127.0.0.1:{server.port}/v1"), 2.0, read_timeout, limit)


async def get(p: http1.Pool, method: bytes = b"POST", body: bytes | None = b"{}") -> tuple[int, bytes]:
    r = await p.request(method, b"/v1/x", [(b"X-Test", b"1")], body)
    try:
        return r.status, await r.read()
    finally:
        r.release()


async def test_request_bytes_and_keep_alive_reuse(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(ok())
    p = pool(server)
    assert await get(p) == (200, b'{"ok":true}')
    assert await get(p) == (200, b'{"ok":true}')
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Test: 1\r\n" % server.port)
    assert b"Content-Length: 2\r\n\r\n{}" in first
    await p.close()


async def test_upstream_class_sends_base_path_query_auth_and_no_hop_headers(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(ok())
    up = Upstream(f"http://127.0.0.1:{server.port}/v1/", "sk-up", 2.0, 5.0, 10)
    client = [
        (b"host", b"proxy"),
        (b"authorization", b"Bearer client"),
        (b"connection", b"keep-alive"),
        (b"x-keep", b"yes"),
    ]
    r = await up.send("GET", "/models", up.headers(client, forward_client_auth=True), None, b"a=1")
    assert (r.status, r.content_type, await r.read()) == (200, "application/json", b'{"ok":true}')
    r.close()
    sent = server.requests[0].lower()
    assert sent.startswith(b"get /v1/models?a=1 http/1.1\r\n")
    assert b"authorization: bearer sk-up" in sent and b"bearer client" not in sent
    assert b"x-keep: yes" in sent and b"host: proxy" not in sent and b"connection:" not in sent
    assert b"content-length" not in sent  # a GET without a body declares none
    await up.aclose()


async def test_chunked_body_arrives_piece_by_piece(serve) -> None:  # type: ignore[no-untyped-def]
    replies = iter([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", ok()(b"")])
    server = await serve(lambda _: next(replies))
    p = pool(server)
    r = await p.request(b"POST", b"/v1/x", [], b"{}")
    pieces = r.chunks()
    assert await pieces.__anext__() == b"hello"  # before the rest is even sent
    server.writers[0].write(b"6\r\n world\r\n0\r\n\r\n")
    assert [c async for c in pieces] == [b" world"]
    r.release()
    assert await get(p) == (200, b'{"ok":true}')  # the connection went back to the pool, framing intact
    assert server.connections == 1
    await p.close()


async def test_body_until_close_and_connection_close_are_not_reused(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(lambda _: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
    p = pool(server)
    assert await get(p) == (200, b"all of it")
    assert await get(p) == (200, b"all of it")
    assert server.connections == 2
    await p.close()


async def test_no_body_statuses_and_head(serve) -> None:  # type: ignore[no-untyped-def]
    replies = iter([b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"])
    server = await serve(lambda _: next(replies))
    p = pool(server)
    assert await get(p) == (204, b"")
    assert await get(p, b"HEAD", None) == (200, b"")
    await p.close()


async def test_interim_100_continue_is_skipped(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(lambda _: b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"done")(b""))
    p = pool(server)
    assert await get(p) == (200, b"done")
    await p.close()


async def test_idle_connection_closed_by_the_server_is_not_reused(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(ok())
    p = pool(server)
    await get(p)
    server.writers[0].close()
    await asyncio.sleep(0.05)
    assert await get(p) == (200, b'{"ok":true}')
    assert server.connections == 2
    await p.close()


async def test_release_before_the_end_closes_the_connection(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(lambda _: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    p = pool(server)
    r = await p.request(b"POST", b"/v1/x", [], b"{}")
    assert await r.chunks().__anext__() == b"hello"
    r.release()  # the client left mid-stream: the upstream must see the connection go
    for _ in range(100):
        if server.eofs:
            break
        await asyncio.sleep(0.01)
    assert server.eofs == 1
    await p.close()


async def test_read_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(lambda _: None)
    p = pool(server, read_timeout=0.1)
    with pytest.raises(http1.ReadTimeout):
        await get(p)
    error, kind = classify(http1.ReadTimeout("x"))
    assert (error.status, kind) == (504, "timeout")
    await p.close()


async def test_refused_connection_is_a_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    p = http1.Pool(http1.Origin(f"http://127.0.0.1:{port}"), 2.0, 5.0, 10)
    with pytest.raises(http1.ConnectError) as caught:
        await get(p)
    error, kind = classify(caught.value)
    assert (error.status, kind) == (502, "connect") and "could not connect" in error.message


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nshort",  # truncated body
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (http1.MAX_HEAD_BYTES + 1) + b"\r\n\r\n",
    ],
)
async def test_broken_answers_are_connection_broken(serve, answer: bytes) -> None:  # type: ignore[no-untyped-def]
    server = await serve(lambda _: answer)
    p = pool(server)
    with pytest.raises(http1.ConnectionBroken) as caught:
        await get(p)
    error, kind = classify(caught.value)
    assert (error.status, kind) == (502, "reset")
    await p.close()


async def test_pool_bound_makes_requests_wait_their_turn(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(ok())
    p = pool(server, limit=1)
    results = await asyncio.gather(*(get(p) for _ in range(5)))
    assert results == [(200, b'{"ok":true}')] * 5
    assert server.connections == 1
    await p.close()


async def test_a_cancelled_wait_for_a_connection_gives_its_turn_away(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(lambda _: None)  # never answers: the one connection stays busy
    p = pool(server, limit=1)
    busy = asyncio.ensure_future(get(p))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(get(p))
    await asyncio.sleep(0.05)
    waiting.cancel()
    busy.cancel()
    await asyncio.gather(busy, waiting, return_exceptions=True)
    server.reply = ok()
    assert await asyncio.wait_for(get(p), 2) == (200, b'{"ok":true}')
    await p.close()
