"""A fast mock OpenAI upstream on loopback, for measuring what a proxy in front of it adds.

Why a raw ``asyncio.Protocol`` with hand-written HTTP/1.1 keep-alive parsing instead of a web
framework: the mock shares a core with the load generator and must never be the bottleneck.
Every response is pre-rendered bytes at start-up, a request costs one ``find`` for the header end,
a couple of byte searches and one ``transport.write``. Measured on this machine kind (one core,
uvloop), it serves several times what the aiohttp load generator can offer (see bench/performance/README.md).

Endpoints:
- ``POST /v1/chat/completions``: JSON, or SSE when the body has ``"stream": true``; a usage chunk
  is sent when ``"include_usage": true`` appears (``stream_options``), as OpenAI does.
- ``GET /v1/models``, ``GET /health`` and ``GET /healthz``.
- ``GET /stats``: request counters, including how many chat bodies contained ``--marker``, so the
  harness can check that a proxy really injected the spec it was given.

Run: ``python -m bench.performance.mock_upstream --port 0`` prints ``MOCK_LISTENING <port>`` once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from dataclasses import dataclass

_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_USAGE_RE = re.compile(rb'"include_usage"\s*:\s*true')
_MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class MockConfig:
    """What the mock answers: fixed delays so that added latency is all the proxy's."""

    delay_ms: float = 0.0  # before the JSON answer / the first SSE chunk (time to first token)
    chunk_delay_ms: float = 0.0  # between streamed token chunks; 0 writes the whole stream at once
    tokens: int = 16  # completion tokens (one SSE content chunk each)
    model: str = "bench"
    marker: bytes = b"SPECLEARN-BENCH-MARKER"


def _frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunk of a chunked-encoded body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class Rendered:
    """Every response body rendered once, so serving is a memory copy."""

    def __init__(self, cfg: MockConfig) -> None:
        created = int(time.time())
        usage = {"prompt_tokens": 20, "completion_tokens": cfg.tokens, "total_tokens": 20 + cfg.tokens}
        text = "hello " * cfg.tokens
        body = json.dumps(
            {
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "created": created,
                "model": cfg.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
            separators=(",", ":"),
        ).encode()
        self.json_response = _head(200, b"application/json", len(body)) + body

        def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
            return {
                "id": "chatcmpl-mock",
                "object": "chat.completion.chunk",
                "created": created,
                "model": cfg.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }

        first = _frame(_sse(chunk({"role": "assistant", "content": ""})))
        tokens = [_frame(_sse(chunk({"content": "hello "}))) for _ in range(cfg.tokens)]
        finish = _frame(_sse(chunk({}, "stop")))
        usage_chunk = _frame(
            _sse(
                {
                    "id": "chatcmpl-mock",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": cfg.model,
                    "choices": [],
                    "usage": usage,
                }
            )
        )
        done = _frame(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        self.stream_head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        # Paced form: [head+role+token0, token1, ..., tail]; tail carries finish/usage/[DONE].
        self.stream_tokens = tokens
        self.stream_first = self.stream_head + first
        self.stream_tail = finish + done
        self.stream_tail_usage = finish + usage_chunk + done
        self.stream_whole = self.stream_first + b"".join(tokens) + self.stream_tail
        self.stream_whole_usage = self.stream_first + b"".join(tokens) + self.stream_tail_usage
        models = json.dumps(
            {"object": "list", "data": [{"id": cfg.model, "object": "model", "created": 0, "owned_by": "bench"}]}
        ).encode()
        self.models = _head(200, b"application/json", len(models)) + models
        self.ok = _head(200, b"text/plain", 2) + b"ok"
        nf = b'{"error":{"message":"not found","type":"invalid_request_error"}}'
        self.not_found = _head(404, b"application/json", len(nf)) + nf


def _head(status: int, ctype: bytes, length: int) -> bytes:
    reason = b"OK" if status == 200 else b"Not Found"
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (status, reason, ctype, length)


class Counters:
    """Plain ints: read by ``GET /stats``; a dict lookup per request would cost more."""

    def __init__(self) -> None:
        self.requests = 0
        self.chat = 0
        self.stream = 0
        self.marker = 0
        self.connections = 0


def _content_length(head: bytes) -> int:
    """Content-Length from a lower-cased header block; 0 when absent."""
    i = head.find(b"content-length:")
    if i < 0:
        return 0
    eol = head.find(b"\r\n", i)
    return int(head[i + 15 : eol if eol >= 0 else len(head)])


def _dechunk(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked request body beginning at ``start``; None until it is complete."""
    pos, out = start, bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n", pos)  # no trailers expected; skip to the final CRLF
            return (bytes(out), end + 2) if end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos : pos + size]
        pos += size + 2


class MockProtocol(asyncio.Protocol):
    """One keep-alive connection: parse a request, answer it, then parse the next one."""

    __slots__ = ("cfg", "r", "c", "loop", "t", "buf", "busy", "close_after", "timer", "closed")

    def __init__(self, cfg: MockConfig, rendered: Rendered, counters: Counters) -> None:
        self.cfg, self.r, self.c = cfg, rendered, counters
        self.loop = asyncio.get_running_loop()
        self.t: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False  # a delayed/paced answer is in flight: requests wait, order is kept
        self.close_after = False
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]
        self.c.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._parse()

    def _parse(self) -> None:
        buf = self.buf
        while buf and not self.busy and not self.closed:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self.t.close()  # type: ignore[union-attr]
                return
            head = bytes(buf[:end]).lower()
            body_start = end + 4
            if b"transfer-encoding: chunked" in head:
                got = _dechunk(buf, body_start)
                if got is None:
                    return
                body, consumed = got
            else:
                n = _content_length(head)
                if len(buf) < body_start + n:
                    return
                body, consumed = bytes(buf[body_start : body_start + n]), body_start + n
            del buf[:consumed]
            eol = head.find(b"\r\n")
            line = head if eol < 0 else head[:eol]
            self.close_after = b"connection: close" in head or line.endswith(b"http/1.0")
            self._answer(line, body)

    def _answer(self, line: bytes, body: bytes) -> None:
        """``line`` is the lower-cased request line, e.g. ``post /v1/chat/completions http/1.1``."""
        c, r, t = self.c, self.r, self.t
        assert t is not None
        c.requests += 1
        if line.startswith(b"post") and b"/chat/completions" in line:
            c.chat += 1
            if self.cfg.marker and self.cfg.marker in body:
                c.marker += 1
            if _STREAM_RE.search(body):
                c.stream += 1
                self._stream(bool(_USAGE_RE.search(body)))
            elif self.cfg.delay_ms > 0:
                self._later(self.cfg.delay_ms, r.json_response)
            else:
                t.write(r.json_response)
                self._finished()
        elif line.startswith(b"get") and b"/models" in line:
            t.write(r.models)
            self._finished()
        elif line.startswith(b"get /stats"):
            stats = json.dumps(
                {
                    "requests": c.requests,
                    "chat": c.chat,
                    "stream": c.stream,
                    "marker": c.marker,
                    "connections": c.connections,
                }
            ).encode()
            t.write(_head(200, b"application/json", len(stats)) + stats)
            self._finished()
        elif line.startswith(b"get /health"):
            t.write(r.ok)
            self._finished()
        else:
            t.write(r.not_found)
            self._finished()

    def _later(self, ms: float, payload: bytes) -> None:
        self.busy = True

        def fire() -> None:
            self.timer = None
            if not self.closed:
                self.t.write(payload)  # type: ignore[union-attr]
                self._finished()

        self.timer = self.loop.call_later(ms / 1000.0, fire)

    def _stream(self, usage: bool) -> None:
        r, cfg = self.r, self.cfg
        tail = r.stream_tail_usage if usage else r.stream_tail
        if cfg.chunk_delay_ms <= 0:
            if cfg.delay_ms > 0:
                self._later(cfg.delay_ms, r.stream_whole_usage if usage else r.stream_whole)
            else:
                self.t.write(r.stream_whole_usage if usage else r.stream_whole)  # type: ignore[union-attr]
                self._finished()
            return
        # Paced: first chunk after delay_ms, then one token chunk per chunk_delay_ms.
        self.busy = True
        # The role chunk travels with the first token, so "first event" = "first token".
        parts = [r.stream_first + r.stream_tokens[0], *r.stream_tokens[1:]]
        parts[-1] = parts[-1] + tail
        step = cfg.chunk_delay_ms / 1000.0
        idx = 0

        def fire() -> None:
            nonlocal idx
            self.timer = None
            if self.closed:
                return
            self.t.write(parts[idx])  # type: ignore[union-attr]
            idx += 1
            if idx < len(parts):
                self.timer = self.loop.call_later(step, fire)
            else:
                self._finished()

        if cfg.delay_ms > 0:
            self.timer = self.loop.call_later(cfg.delay_ms / 1000.0, fire)
        else:
            fire()

    def _finished(self) -> None:
        self.busy = False
        if self.close_after:
            self.t.close()  # type: ignore[union-attr]
            self.closed = True
            return
        if self.buf and not self.closed:
            self.loop.call_soon(self._parse)


async def serve(cfg: MockConfig, host: str = "127.0.0.1", port: int = 0) -> tuple[asyncio.AbstractServer, Counters]:
    """Start the mock in the running loop; returns the server and its live counters."""
    rendered, counters = Rendered(cfg), Counters()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: MockProtocol(cfg, rendered, counters), host, port, backlog=4096, reuse_address=True
    )
    return server, counters


def install_fast_loop() -> None:
    """uvloop when present: it roughly doubles what a Python socket server does per core."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.performance.mock_upstream", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="delay before the answer / first chunk")
    p.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between streamed chunks")
    p.add_argument("--tokens", type=int, default=16, help="completion tokens (SSE content chunks)")
    p.add_argument("--marker", default="SPECLEARN-BENCH-MARKER", help="bytes counted in request bodies")
    p.add_argument("--cpu", type=int, action="append", help="pin to this core (repeatable)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.cpu:
        os.sched_setaffinity(0, set(args.cpu))
    cfg = MockConfig(
        delay_ms=args.delay_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        tokens=max(1, args.tokens),
        marker=args.marker.encode(),
    )
    install_fast_loop()

    async def run() -> None:
        server, _ = await serve(cfg, args.host, args.port)
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        print(f"MOCK_LISTENING {port}", flush=True)
        await server.serve_forever()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
