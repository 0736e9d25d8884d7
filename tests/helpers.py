"""Test harness: a real fake upstream (HTTP on loopback, records what it receives, injects faults)
and the proxy started as a real `speclearn serve` process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiohttp import web

from proxy.config import write_tuning

REPO = Path(__file__).resolve().parent.parent
# ../shared beside the checkout (CI lays a copy there too), else the workplace's own copy
SHARED = next((d for d in (REPO.parent / "shared", Path("/work/shared")) if d.is_dir()), REPO.parent / "shared")
ICAI = SHARED / "data" / "icai-synthetic"
ICAI_ALIGNED = ICAI / "synthetic_data_aligned_vqvtb.csv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = 0.0  # time.monotonic() on arrival


@dataclass
class FakeUpstream:
    """An OpenAI-like server. The request header `X-Fake` picks a fault:
    `status=429`, `reset`, `stall=SECONDS`, `cut` (stream breaks mid-way), `malformed` (a chunk
    that is not JSON), `slow` (a stream that never ends, for disconnect tests), `tools`, `no-done`.
    Options follow after `;`: `status=429;retry-after=2` sends a Retry-After header, and
    `flaky=503x2;tag=T` answers 503 to the first 2 requests carrying that exact header value, then
    normally (the tag keeps tests apart)."""

    received: list[Received] = field(default_factory=list)
    fault_counts: dict[str, int] = field(default_factory=dict)  # requests seen per `flaky` header value
    closed_streams: list[float] = field(default_factory=list)  # when a client dropped a stream
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeUpstream:
        ready = threading.Event()
        self.port = free_port()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/v1/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, handle_signals=False)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            self._loop.run_until_complete(site.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop and self._runner:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)

    def last(self, path: str = "/v1/chat/completions") -> Received:
        return [r for r in self.received if r.path == path][-1]

    # -- behaviour ---------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw
        self.received.append(Received(request.method, request.path, dict(request.headers), body, time.monotonic()))
        fault = request.headers.get("X-Fake", "")
        options = dict(part.partition("=")[::2] for part in fault.split(";"))
        if "flaky" in options:
            code, _, times = options["flaky"].partition("x")
            self.fault_counts[fault] = seen = self.fault_counts.get(fault, 0) + 1
            if seen <= int(times or 1):
                return self._status(int(code), options.get("retry-after"))
            fault = ""
        if fault.startswith("status="):
            return self._status(int(options["status"]), options.get("retry-after"))
        if fault.startswith("stall="):
            await asyncio.sleep(float(fault.split("=")[1]))
        if fault == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        path = request.path
        if path == "/v1/models":
            return web.json_response(
                {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]}
            )
        if path == "/v1/chat/completions":
            if isinstance(body, dict) and body.get("stream"):
                return await self._chat_stream(request, body, fault)
            return web.json_response(chat_completion(body, fault))
        if path == "/v1/responses":
            if isinstance(body, dict) and body.get("stream"):
                return await self._responses_stream(request, body)
            return web.json_response(response_object(body))
        if path == "/v1/completions":
            return web.json_response(
                {"id": "cmpl-up", "object": "text_completion", "model": "fake-model",
                 "choices": [{"index": 0, "text": "completed", "finish_reason": "stop"}]}
            )  # fmt: skip
        if path == "/v1/embeddings":
            return web.json_response(
                {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]}
            )
        return web.json_response({"echo": path, "method": request.method, "query": request.query_string})

    @staticmethod
    def _status(code: int, retry_after: str | None) -> web.Response:
        return web.json_response(
            {"error": {"message": f"fake upstream says {code}", "type": "fake", "param": None, "code": "fake"}},
            status=code,
            headers={"Retry-After": retry_after} if retry_after is not None else None,
        )

    async def _chat_stream(self, request: web.Request, body: dict[str, Any], fault: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Upstream": "fake"})
        await resp.prepare(request)
        text = answer_text(body)
        pieces = [text[i : i + 4] for i in range(0, len(text), 4)] or [""]

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": 1, "model": "fake-model",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
            return b"data: " + orjson.dumps(data) + b"\n\n"

        try:
            await resp.write(chunk({"role": "assistant", "content": ""}))
            if fault == "slow":
                while True:
                    await resp.write(chunk({"content": "."}))
                    await asyncio.sleep(0.1)
            for i, piece in enumerate(pieces):
                if fault == "cut" and i == 1:
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                if fault == "malformed" and i == 1:
                    await resp.write(b"data: {this is not json\n\n")
                await resp.write(chunk({"content": piece}))
            await resp.write(chunk({}, "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": 1,
                         "model": "fake-model", "choices": [],
                         "usage": {"prompt_tokens": 7, "completion_tokens": len(pieces),
                                   "total_tokens": 7 + len(pieces)}}  # fmt: skip
                await resp.write(b"data: " + orjson.dumps(usage) + b"\n\n")
            if fault != "no-done":
                await resp.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.closed_streams.append(time.monotonic())
            raise
        return resp

    async def _responses_stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        final = response_object(body)
        events = [
            {"type": "response.created", "response": {**final, "status": "in_progress", "output": []}},
            {
                "type": "response.output_text.delta",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": "resp",
            },
            {
                "type": "response.output_text.delta",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": "onse",
            },
            {"type": "response.completed", "response": final},
        ]
        for seq, event in enumerate(events):
            event["sequence_number"] = seq
            await resp.write(f"event: {event['type']}\n".encode() + b"data: " + orjson.dumps(event) + b"\n\n")
        return resp


def answer_text(body: Any) -> str:
    """The fake's answer names the system message it saw first, so tests see what arrived."""
    messages = body.get("messages", []) if isinstance(body, dict) else []
    first_system = next((m.get("content") for m in messages if m.get("role") == "system"), None)
    return f"system={first_system}"


def chat_completion(body: Any, fault: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer_text(body)}
    if fault == "tools":
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}  # fmt: skip
    n = body.get("n", 1) if isinstance(body, dict) else 1
    return {
        "id": "chatcmpl-upstream", "object": "chat.completion", "created": 1, "model": "fake-model",
        "choices": [{"index": i, "message": message, "finish_reason": "stop"} for i in range(n)],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        "system_fingerprint": "fp_fake", "x_unknown_field": {"kept": True},
    }  # fmt: skip


def response_object(body: Any) -> dict[str, Any]:
    instructions = body.get("instructions") if isinstance(body, dict) else None
    return {
        "id": "resp_upstream", "object": "response", "created_at": 1, "status": "completed", "model": "fake-model",
        "instructions": instructions,
        "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "response", "annotations": []}]}],
        "usage": {"input_tokens": 5, "output_tokens": 1, "total_tokens": 6},
    }  # fmt: skip


# -- the proxy as a real process -----------------------------------------------------------------
@dataclass
class ProxyProcess:
    process: subprocess.Popen[bytes]
    port: int
    specs_dir: Path
    data_dir: Path
    env: dict[str, str]
    log_path: Path

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def kill(self) -> None:
        """SIGKILL the server and its workers, like an OOM kill or a node loss."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)


def write_spec(specs_dir: Path, name: str, text: str, labels: tuple[str, ...] = ("production",)) -> int:
    """Publish through the real registry code, as `speclearn specs publish` does."""
    from proxy.registry.files import FileRegistry

    return FileRegistry(specs_dir, poll_interval=0).publish_sync(name, text, labels=list(labels)).version


def start_proxy(
    tmp_path: Path,
    upstream_url: str,
    env: dict[str, str] | None = None,
    workers: int = 1,
    specs: dict[str, str] | None = None,
    port: int | None = None,
    specs_dir: Path | None = None,
    data_dir: Path | None = None,
    tuning: dict[str, object] | None = None,
) -> ProxyProcess:
    """Start `speclearn serve` and wait until /readyz says ready and every worker has started. `specs` = {name: text} published
    as production versions first (default: a `default` spec). `tuning`: proxy/tuning.py constants for this process,
    over a fast registry poll and ledger flush."""
    specs_dir = specs_dir or tmp_path / "specs"
    data_dir = data_dir or tmp_path / "data"
    if not specs_dir.exists():
        for name, text in (specs if specs is not None else {"default": "DEFAULT SPEC"}).items():
            write_spec(specs_dir, name, text)
    port = port or free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    constants = {"registry_poll_interval": 0.1, "ledger_flush_interval": 0.01, **(tuning or {})}
    full_env = {
        **os.environ,
        "SPECLEARN_UPSTREAM_URL": upstream_url,
        "SPECLEARN_SPECS_DIR": str(specs_dir),
        "SPECLEARN_DATA_DIR": str(data_dir),
        **write_tuning(tmp_path / f"tuning-{port}.toml", proxy=constants),
        **(env or {}),
    }
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp_path / f"proxy-{port}.log"
    log_file = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--port", str(port), "--workers", str(workers), "--log-level", "info"],
        env=full_env, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    handle = ProxyProcess(process, port, specs_dir, data_dir, full_env, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"proxy exited with {process.returncode}:\n{handle.log()}")
        try:
            ready = httpx.get(handle.root_url + "/readyz", timeout=1).status_code == 200
            # /readyz answers from whichever worker is up first: wait for every worker's startup
            if ready and handle.log().count("Application startup complete") >= workers:
                return handle
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    handle.kill()
    raise RuntimeError(f"proxy did not become ready:\n{handle.log()}")
