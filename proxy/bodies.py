"""Reading a request body within the size limit and parsing it as a JSON object, with messages
that say exactly what is wrong."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from .errors import InvalidRequest, PayloadTooLarge

ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")  # inference and feedback ids, client-chosen or ours
ID_RULE = "1-128 of A-Z a-z 0-9 _ . : -"


class ClientGone(Exception):
    """The client disconnected; nobody is left to answer."""


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone() from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    raw = await read_body(request, limit)
    if not raw.strip():
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object, not {type(body).__name__}")
    return body


def expect(body: dict[str, Any], field: str, kind: type | tuple[type, ...], what: str, required: bool = False) -> Any:
    value = body.get(field)
    if value is None:
        if required:
            raise InvalidRequest(f"'{field}' is required", param=field)
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise InvalidRequest(f"'{field}' must be {what}, not {type(value).__name__}", param=field)
    return value


def validate_chat(body: dict[str, Any]) -> None:
    messages = expect(body, "messages", list, "an array of messages", required=True)
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages[{i}] must be an object", param=f"messages[{i}]")
        if not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{i}].role must be a string", param=f"messages[{i}].role")
    expect(body, "model", str, "a string")
    expect(body, "stream", bool, "a boolean")


def validate_responses(body: dict[str, Any]) -> None:
    expect(body, "input", (str, list), "a string or an array", required=False)
    expect(body, "instructions", str, "a string")
    expect(body, "model", str, "a string")
    expect(body, "stream", bool, "a boolean")


def validate_completions(body: dict[str, Any]) -> None:
    expect(body, "model", str, "a string")
    expect(body, "stream", bool, "a boolean")
