"""Relaying an upstream SSE stream event by event, unchanged except for the chat completion id.

Events are relayed as bytes; only the `data:` payload is parsed (orjson), for what the ledger needs:
content and tool-call deltas, usage, and whether the stream ended properly. A stream that ends
without its terminal event, breaks, or sends a chunk that is not JSON ends with an SSE error event
and no `[DONE]`, so no client mistakes it for a complete answer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import error_body

DONE = b"[DONE]"
RESPONSES_TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete"})


class BrokenStream(Exception):
    """The upstream stream cannot be relayed further."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True)
class StreamCapture:
    """What the ledger keeps of a stream."""

    text_parts: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    first_token_at: float | None = None
    finished: bool = False
    upstream_error: Any = None

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def tool_call_list(self) -> list[dict[str, Any]] | None:
        return [self.tool_calls[i] for i in sorted(self.tool_calls)] if self.tool_calls else None


def error_event(message: str, code: str) -> bytes:
    return b"data: " + error_body(message, "upstream_error", None, code) + b"\n\n"


def split_events(buffer: bytearray) -> list[bytes]:
    """Take the complete events (ended by a blank line) off the front of `buffer`."""
    events: list[bytes] = []
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return events
        events.append(bytes(buffer[: end + 2]))
        del buffer[: end + 2]


def data_of(event: bytes) -> bytes | None:
    """The `data:` payload of one event (multi-line data joined), or None for comments/keep-alives."""
    if event.startswith(b"data: ") and event.count(b"\n") == 2:  # the usual one-line event
        return event[6:-2]
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return lines[0] if len(lines) == 1 else b"\n".join(lines)


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    index = delta.get("index", 0)
    call = calls.setdefault(index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    if delta.get("id"):
        call["id"] = delta["id"]
    fn = delta.get("function") or {}
    if fn.get("name"):
        call["function"]["name"] += fn["name"]
    if fn.get("arguments"):
        call["function"]["arguments"] += fn["arguments"]


def capture_chat_chunk(capture: StreamCapture, chunk: dict[str, Any]) -> None:
    if chunk.get("usage"):
        capture.usage = chunk["usage"]
    if "error" in chunk:
        capture.upstream_error = chunk["error"]
    for choice in chunk.get("choices") or ():
        if choice.get("index", 0) != 0:
            continue  # the ledger keeps the first choice; all choices are relayed
        delta = choice.get("delta") or {}
        content = delta.get("content") or choice.get("text")  # chat delta, or legacy completions
        if content:
            capture.text_parts.append(content)
        for call in delta.get("tool_calls") or ():
            _merge_tool_call(capture.tool_calls, call)
        if (content or delta.get("tool_calls")) and capture.first_token_at is None:
            capture.first_token_at = time.perf_counter()


def capture_responses_event(capture: StreamCapture, event: dict[str, Any]) -> None:
    kind = event.get("type", "")
    if kind == "response.output_text.delta":
        capture.text_parts.append(event.get("delta", ""))
        if capture.first_token_at is None:
            capture.first_token_at = time.perf_counter()
    elif kind in RESPONSES_TERMINAL:
        capture.finished = True
        usage = (event.get("response") or {}).get("usage")
        if usage:
            capture.usage = usage
        if kind == "response.failed":
            capture.upstream_error = (event.get("response") or {}).get("error")
    elif kind == "error":
        capture.upstream_error = event


EventHandler = Callable[[bytes, dict[str, Any]], bytes]


async def relay(chunks: AsyncIterator[bytes], capture: StreamCapture, handle: EventHandler) -> AsyncIterator[bytes]:
    """Yield the upstream's events, each JSON payload shown to `handle` (which may rewrite the
    event); raise BrokenStream on a chunk that is not JSON or an ending without the terminal event.
    Events that arrived in one read leave in one write: no added delay, one ASGI send."""
    buffer = bytearray()
    async for data in chunks:
        buffer += data.replace(b"\r\n", b"\n") if b"\r" in data else data
        out: list[bytes] = []
        for event in split_events(buffer):
            payload = data_of(event)
            if payload == DONE:
                capture.finished = True
            elif payload is not None:
                try:
                    parsed = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    if out:
                        yield b"".join(out)
                    raise BrokenStream("the upstream sent a stream event that is not JSON", "malformed_chunk") from None
                if isinstance(parsed, dict):
                    event = handle(event, parsed)
            out.append(event)
        if out:
            yield out[0] if len(out) == 1 else b"".join(out)
    if buffer.strip():
        raise BrokenStream("the upstream stream ended inside an event", "broken_stream")
    if not capture.finished:
        raise BrokenStream("the upstream stream ended before it completed", "broken_stream")


def chat_events(capture: StreamCapture, our_id: bytes | None) -> EventHandler:
    """Chat/completions chunks: captured, and the upstream id replaced by `our_id` (a quoted JSON
    string) when given, as bytes so the rest of the event stays exactly as sent."""
    id_from: bytes | None = None

    def handle(event: bytes, chunk: dict[str, Any]) -> bytes:
        nonlocal id_from
        capture_chat_chunk(capture, chunk)
        if id_from is None and isinstance(chunk.get("id"), str):
            id_from = b'"' + chunk["id"].encode() + b'"'
        if id_from is not None and our_id is not None:
            return event.replace(id_from, our_id, 1)
        return event

    return handle


def responses_events(capture: StreamCapture) -> EventHandler:
    """Responses API events: captured, relayed unchanged; a terminal event ends the stream."""

    def handle(event: bytes, parsed: dict[str, Any]) -> bytes:
        capture_responses_event(capture, parsed)
        return event

    return handle
