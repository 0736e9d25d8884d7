"""Spec writes, exports and erasure over HTTP, behind the admin key (never the client keys)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .bodies import read_json_object
from .errors import InvalidRequest, ProxyError
from .identity import MAX_USER
from .registry import Hold, SpecState
from .responses import error_response, json_response
from .state import ProxyState


def describe(state: SpecState) -> dict[str, Any]:
    return {
        "name": state.name,
        "labels": state.labels,
        "versions": sorted(state.versions),
        "latest": max(state.versions) if state.versions else None,
        "instruction": state.instruction,
        "holds": {str(v): hold.to_dict() for v, hold in sorted(state.holds.items())},
    }


def _admin(request: Request) -> ProxyState:
    state: ProxyState = request.app.state.proxy
    state.check_admin(request.headers.get("authorization"))
    return state


async def list_specs(request: Request) -> Response:
    try:
        state = _admin(request)
    except ProxyError as exc:
        return error_response(exc)
    return json_response({"data": [describe(s) for s in state.registry.snapshot.specs.values()]})


async def get_version(request: Request) -> Response:
    try:
        state = _admin(request)
        spec_state = state.registry.snapshot.get(request.path_params["name"])
        spec = spec_state.resolve(request.path_params.get("ref"), include_held=True)  # to review, not serve
    except ProxyError as exc:
        return error_response(exc)
    hold = spec_state.holds.get(spec.version)
    return json_response({"name": spec.name, "version": spec.version, "text": spec.text, "meta": spec.meta,
                          "hold": hold.to_dict() if hold else None})  # fmt: skip


async def publish(request: Request) -> Response:
    """Without `labels` (or with null) a person's first version becomes `production` and a later one
    waits unlabelled; an explicit list, even `[]`, is applied as given. The response names the
    labels now on the version, so the caller sees whether it is served."""
    try:
        state = _admin(request)
        body = await read_json_object(request, state.settings.max_body_bytes)
        text, labels, meta = body.get("text"), body.get("labels"), body.get("meta", {})
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequest("'text' must be a non-empty string", param="text")
        if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
            raise InvalidRequest("'labels' must be an array of strings", param="labels")
        if not isinstance(meta, dict):
            raise InvalidRequest("'meta' must be an object", param="meta")
        spec = await state.registry.publish(request.path_params["name"], text, meta=meta, labels=labels)
    except ProxyError as exc:
        return error_response(exc)
    now = state.registry.snapshot.specs.get(spec.name)  # the publisher sees its own write at once
    on_it = sorted(label for label, v in now.labels.items() if v == spec.version) if now else []
    return json_response({"name": spec.name, "version": spec.version, "sha256": spec.sha256, "labels": on_it},
                         status=201)  # fmt: skip


def version_number(version: object) -> int:
    """A version number: a positive integer that fits the registry."""
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version < 2**31:
        raise InvalidRequest("'version' must be a version number (a positive integer)", param="version")
    return version


async def move_label(state: ProxyState, name: str, label: str, version: object) -> SpecState:
    """Point `label` of spec `name` at `version` (promotion, rollback): the admin API's and the
    console's one way to do it."""
    await state.registry.set_label(name, label, version_number(version))
    return state.registry.snapshot.get(name)


async def set_label(request: Request) -> Response:
    try:
        state = _admin(request)
        body = await read_json_object(request, 4096)
        spec = await move_label(state, request.path_params["name"], request.path_params["label"], body.get("version"))
    except ProxyError as exc:
        return error_response(exc)
    return json_response(describe(spec))


async def decide_hold(state: ProxyState, name: str, version: object, approve: bool) -> Hold:
    """Approval mode: serve a held version under the label the compiler asked for (approve), or
    never (reject); the admin API's and the console's one way to do it."""
    return await state.registry.decide_hold(name, version_number(version), approve=approve)


async def approve(request: Request) -> Response:
    return await _decide_hold(request, approve=True)


async def reject(request: Request) -> Response:
    return await _decide_hold(request, approve=False)


async def _decide_hold(request: Request, approve: bool) -> Response:
    try:
        state = _admin(request)
        name, raw = request.path_params["name"], request.path_params["version"]
        version = int(raw) if raw.isascii() and raw.isdigit() else raw
        hold = await decide_hold(state, name, version, approve)
    except ProxyError as exc:
        return error_response(exc)
    return json_response({"name": name, "version": version, **hold.to_dict()})


async def export_feedback(request: Request) -> Response:
    """JSONL, one feedback event joined to its inference per line."""
    try:
        state = _admin(request)
        spec = request.query_params.get("spec")
        since = request.query_params.get("since")
        events = await state.ledger.feedback_events(spec=spec, since=float(since) if since else None)
    except ValueError:
        return error_response(InvalidRequest("'since' must be a Unix timestamp", param="since"))
    except ProxyError as exc:
        return error_response(exc)

    async def lines() -> AsyncIterator[bytes]:
        for event in events:
            yield orjson.dumps(event.to_dict()) + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def forget_user(request: Request) -> Response:
    """`DELETE /admin/users/{user}`: erase an end user's inferences and feedback (as
    `speclearn feedback forget`); answers once the rows are gone, durably, with the counts."""
    try:
        state = _admin(request)
        user = request.path_params["user"]
        if not user.strip() or len(user) > MAX_USER + 32:  # room for a stored form (pii:..., addr:...)
            raise InvalidRequest(f"a user id is 1 to {MAX_USER} characters", param="user")
        inferences, feedback = await state.ledger.forget_user(user)
    except ProxyError as exc:
        return error_response(exc)
    return json_response({"user": user, "erased": {"inferences": inferences, "feedback": feedback}})
