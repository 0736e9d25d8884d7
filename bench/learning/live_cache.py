"""A caching HTTP shim between the proxy and the embedded model, for bench.live_loop.

Why: the live loop asks the same spec the same question many times (every world starts on the
same static spec; the static and oracle arms are asked every event the served spec is). With
llama.cpp's prompt cache off (compiler.simulate.EVAL_LLAMA_CPP) and a seed from a small fixed
set, an answer is a function of its request, so it is computed once: the response to a chat
completion is stored under the sha256 of the canonical request body (sorted keys, without the
fields that name the caller, not the question: `user`) and replayed for every later equal
request, in this run and the next (`cache_dir`, bench/results/live-loop-cache/, gitignored).

Only non-streamed chat completions answered 200 are stored; any other request passes through.
Equal requests in flight at once are computed once (the second waits for the first). A replay
is served at once, so latency means nothing behind this shim (the loop turns that guardrail off).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

CALLER_FIELDS = ("user",)  # who asks, not what: the same question of two users is one answer


def cache_key(body: dict[str, Any]) -> str:
    """sha256 of the request body without the caller's fields, keys sorted."""
    canonical = {k: v for k, v in body.items() if k not in CALLER_FIELDS}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class AnswerCache:
    """The stored responses: one JSON file per key under `directory` (two-character fan-out)."""

    directory: Path
    upstream: str  # the model server's base URL (…/v1)
    timeout: float = 600.0
    hits: int = 0
    misses: int = 0
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def chat(self, body: dict[str, Any], client: httpx.Client) -> tuple[int, bytes]:
        """The stored response to `body`, or the upstream's (stored when it is a 200)."""
        if body.get("stream"):
            return self.forward("/chat/completions", body, client)
        key = cache_key(body)
        path = self.path(key)
        with self._lock(key):
            if path.exists():
                with self._guard:
                    self.hits += 1
                return 200, path.read_bytes()
            status, data = self.forward("/chat/completions", body, client)
            with self._guard:
                self.misses += 1
            if status == 200:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
                tmp.write_bytes(data)
                tmp.replace(path)  # atomic: a reader never sees half a response
            return status, data

    def forward(self, path: str, body: dict[str, Any] | None, client: httpx.Client) -> tuple[int, bytes]:
        """The upstream's answer; a connection the server dropped is retried once on a new one."""
        url = self.upstream.rstrip("/") + path
        for attempt in (1, 2):
            try:
                resp = client.get(url) if body is None else client.post(url, json=body)
                return resp.status_code, resp.content
            except httpx.TransportError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


@contextlib.contextmanager
def serve_cache(cache: AnswerCache) -> Iterator[str]:
    """The shim on a free loopback port for the duration; yields its base URL (…/v1)."""
    # one client per handler thread: concurrent requests on one httpx.Client's pool to llama.cpp
    # failed with EBADF, a connection closed under another thread's read
    local = threading.local()
    clients: list[httpx.Client] = []

    def client_of_thread() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=cache.timeout)
            clients.append(local.client)
        return local.client  # type: ignore[no-any-return]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
                if self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(*cache.chat(body, client_of_thread()))
                else:
                    self._send(*cache.forward(self.path.removeprefix("/v1"), body, client_of_thread()))
            except (ValueError, httpx.HTTPError) as exc:
                err = {"error": {"message": f"live-loop cache: {exc}", "type": "server_error", "code": None}}
                self._send(502, json.dumps(err).encode())

        def do_GET(self) -> None:
            try:
                self._send(*cache.forward(self.path.removeprefix("/v1"), None, client_of_thread()))
            except httpx.HTTPError as exc:
                err = {"error": {"message": f"live-loop cache: {exc}", "type": "server_error", "code": None}}
                self._send(502, json.dumps(err).encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        for client in clients:
            client.close()
