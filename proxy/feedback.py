"""`/v1/feedback`: thumbs, scores and pairwise judgments on logged inferences; and
`/v1/feedback/{feedback_id}`: a user changing (PUT) or taking back (DELETE) their judgment.

The judgment is stored durably before the answer; an inference still in the write queue (or in
another worker's) counts as known, so feedback may race ahead of its inference and still join.
A change is made in place, so the judgment is counted once, with its latest value; a retracted
one is counted nowhere. A publishable (browser) key may change only what it created, and only by
the id it was given back: server-made ids are random, and an id the page chooses must be long.

While storage is unavailable (the database down or unreachable) every feedback write answers 503
`storage_unavailable` with `Retry-After`, within seconds: nothing is acknowledged that is not
stored. That holds for an inference whose row is still only in this worker's buffer too: the
judgment cannot be stored, so it is refused like any other, and the same request (with its
`feedback_id`, to be idempotent) succeeds once storage is back and the buffered row written.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import identity, metrics
from .bodies import ID_RE, ID_RULE, read_json_object
from .errors import InvalidRequest, MethodNotAllowed, NotFound, ProxyError, RateLimited, ServiceUnavailable
from .keys import bearer
from .ledger import PAIR, SCORE, THUMB, FeedbackRecord, InferenceRecord
from .ledger.base import KEEP
from .responses import error_response, json_response
from .routing import version_label
from .state import ProxyState

MAX_FEEDBACK_BYTES = 64 * 1024
MAX_COMMENT = 8_000
MAX_TAGS = 32
MIN_BROWSER_ID = 16  # a feedback_id a page chooses is its proof of authorship: not a guessable one
ITEM_METHODS = "PUT, DELETE, OPTIONS"
# Retry-After of a 503 while storage is away: a restarting database is back in seconds, a failover
# in tens; 5 s spaces a client's retries without making it wait long after the return.
STORAGE_RETRY_AFTER = 5


def parse_value(value: Any) -> tuple[str, float]:
    """`up`/`down`, booleans and ±1 are thumbs; any other finite number is a score."""
    if isinstance(value, bool):
        return THUMB, 1.0 if value else -1.0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("up", "down"):
            return THUMB, 1.0 if lowered == "up" else -1.0
        raise InvalidRequest(f'\'value\' must be "up", "down", a boolean or a number, not {value!r}', param="value")
    if isinstance(value, int) and value in (1, -1):
        return THUMB, float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return SCORE, float(value)
    raise InvalidRequest('\'value\' must be "up", "down", a boolean or a finite number', param="value")


def _id(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not ID_RE.match(value):
        raise InvalidRequest(f"'{field}' must be a string of {ID_RULE}", param=field)
    return value


def _comment(body: dict[str, Any]) -> str | None:
    value = body.get("comment")
    if value is not None and not isinstance(value, str):
        raise InvalidRequest("'comment' must be a string", param="comment")
    if value is not None and len(value) > MAX_COMMENT:
        raise InvalidRequest(f"'comment' is longer than {MAX_COMMENT} characters", param="comment")
    return value


def _tags(body: dict[str, Any]) -> dict[str, str] | None:
    tags = body.get("tags")
    if tags is None:
        return None
    if (
        not isinstance(tags, dict)
        or len(tags) > MAX_TAGS
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 256 for k, v in tags.items()
        )
    ):
        raise InvalidRequest(
            f"'tags' must be an object of at most {MAX_TAGS} string values (keys ≤64, values ≤256 chars)", param="tags"
        )
    return tags


def parse_feedback(body: dict[str, Any]) -> FeedbackRecord:
    known = {
        "inference_id",
        "value",
        "comment",
        "tags",
        "feedback_id",
        "chosen_id",
        "rejected_id",
        *identity.USER_FIELDS,
    }
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}", param=unknown[0])
    feedback_id = _id(body, "feedback_id") or "fb-" + uuid.uuid4().hex
    comment = _comment(body)
    tags = _tags(body)
    now = time.time()
    if "chosen_id" in body or "rejected_id" in body:
        chosen, rejected = _id(body, "chosen_id"), _id(body, "rejected_id")
        if chosen is None or rejected is None:
            raise InvalidRequest("a pairwise judgment needs both 'chosen_id' and 'rejected_id'")
        if chosen == rejected:
            raise InvalidRequest("'chosen_id' and 'rejected_id' must differ", param="rejected_id")
        if "inference_id" in body or "value" in body:
            raise InvalidRequest("send either a pair (chosen_id, rejected_id) or a rating (inference_id, value)")
        return FeedbackRecord(feedback_id, chosen, PAIR, 1.0, now, comment, tags, rejected)
    inference_id = _id(body, "inference_id")
    if inference_id is None:
        raise InvalidRequest("'inference_id' is required", param="inference_id")
    if "value" not in body:
        raise InvalidRequest("'value' is required", param="value")
    kind, value = parse_value(body["value"])
    return FeedbackRecord(feedback_id, inference_id, kind, value, now, comment, tags)


async def _known(state: ProxyState, inference_id: str, field: str) -> InferenceRecord:
    found = await state.ledger.wait_for_inference(inference_id, state.settings.feedback_wait_seconds)
    if found is None:
        raise NotFound(f"no inference with id {inference_id!r}", param=field, code="inference_not_found")
    return found


def parse_change(body: dict[str, Any]) -> tuple[tuple[str, float] | None, object]:
    """A PUT body: the new (kind, value) and/or comment (null erases it; absent keeps it)."""
    unknown = sorted(set(body) - {"value", "comment"})
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}: send 'value' and/or 'comment'", param=unknown[0])
    if not body:
        raise InvalidRequest("send the new 'value' and/or 'comment'")
    value = parse_value(body["value"]) if "value" in body else None
    return value, _comment(body) if "comment" in body else KEEP


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _authorize(state: ProxyState, request: Request) -> str | None:
    """A client key (or an open proxy) as for inference: None; or a publishable key within its
    limits: its fingerprint, the owner of what it creates."""
    access = state.feedback_access
    token = bearer(request.headers.get("authorization"))
    if access.is_feedback_key(token):
        assert token is not None
        access.limit(token, _address(request))
        return identity.key_owner(token)
    state.check_client(request.headers.get("authorization"))
    return None


def _judge(state: ProxyState, request: Request, body: dict[str, Any], owner: str | None) -> str | None:
    """Who judged: an id the feedback names, else for a browser (publishable key) its hashed address."""
    user = identity.feedback_user(body, request.headers)
    if user is None and owner is not None:
        user = identity.address_user(_address(request), state.ledger.address_key)
    return user


def _refused(exc: ProxyError, cors: dict[str, str]) -> Response:
    """The error in the OpenAI shape, counted; with `Retry-After` when waiting helps: a rate limit,
    or storage away (then nothing was stored, and the same request may be sent again)."""
    metrics.observe_request("feedback", "none", "none", exc.status, 0.0, 0.0)
    headers = dict(cors)
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = str(STORAGE_RETRY_AFTER)
    return error_response(exc, headers or None)


async def wrong_method(request: Request) -> Response:
    """Ours, not the upstream's: any other method is a 405 here, never relayed."""
    wrong = MethodNotAllowed(
        f"{request.method} {request.url.path}: use POST (PUT or DELETE /v1/feedback/ID changes one)"
    )
    return error_response(wrong, {"Allow": "POST, OPTIONS"})


async def wrong_item_method(request: Request) -> Response:
    wrong = MethodNotAllowed(f"{request.method} {request.url.path}: use PUT to change, DELETE to retract")
    return error_response(wrong, {"Allow": ITEM_METHODS})


async def feedback_preflight(request: Request) -> Response:
    state: ProxyState = request.app.state.proxy
    return state.feedback_access.preflight(request)


async def item_preflight(request: Request) -> Response:
    state: ProxyState = request.app.state.proxy
    return state.feedback_access.preflight(request, methods="PUT, DELETE", allow=ITEM_METHODS)


async def post_feedback(request: Request) -> Response:
    state: ProxyState = request.app.state.proxy
    cors: dict[str, str] = {}
    try:
        cors = state.feedback_access.cors_headers(state.feedback_access.origin(request))
        owner = _authorize(state, request)
        body = await read_json_object(request, min(MAX_FEEDBACK_BYTES, state.settings.max_body_bytes))
        feedback = parse_feedback(body)
        if owner is not None and "feedback_id" in body and len(feedback.id) < MIN_BROWSER_ID:
            raise InvalidRequest(
                f"with a publishable key, a 'feedback_id' you choose must be at least {MIN_BROWSER_ID} random "
                "characters (it is what lets this browser change the vote later), or leave it out", param="feedback_id",
            )  # fmt: skip
        feedback = dataclasses.replace(feedback, user_id=_judge(state, request, body, owner), owner=owner)
        inference = await _known(state, feedback.inference_id, "chosen_id" if feedback.rejected_id else "inference_id")
        if feedback.rejected_id:
            await _known(state, feedback.rejected_id, "rejected_id")
        stored, created = await state.ledger.add_feedback(feedback)
    except ProxyError as exc:
        return _refused(exc, cors)
    if created:
        value = {PAIR: "pair", SCORE: "score"}.get(stored.kind) or ("up" if stored.value > 0 else "down")
        version = version_label(state.registry.snapshot, inference.spec_name, inference.spec_version)
        metrics.count_feedback(inference.spec_name or "none", version, stored.kind, value)
    metrics.observe_request("feedback", "none", "none", 200, 0.0, 0.0)
    return json_response(
        {"feedback_id": stored.id, "status": "created" if created else "duplicate"}, headers=cors or None
    )


# -- one judgment: change or retract -----------------------------------------------------------------
Outcome = tuple[FeedbackRecord, bool] | None  # (as stored, changed?); None: unknown to this caller
Action = Callable[[ProxyState, Request, str, "str | None"], Awaitable[Outcome]]


async def _on_item(request: Request, action: Action, done: str, same: str) -> Response:
    """Shared by PUT and DELETE: CORS, key, the id, the error shape; `done` or `same` as status."""
    state: ProxyState = request.app.state.proxy
    cors: dict[str, str] = {}
    feedback_id = request.path_params["feedback_id"]
    try:
        cors = state.feedback_access.cors_headers(state.feedback_access.origin(request))
        owner = _authorize(state, request)
        if not ID_RE.match(feedback_id):
            raise InvalidRequest(f"a feedback id is {ID_RULE}", param="feedback_id")
        result = await action(state, request, feedback_id, owner)
        if result is None:  # unknown, or another key's: the same answer, so ids cannot be probed
            raise NotFound(f"no feedback with id {feedback_id!r}", param="feedback_id", code="feedback_not_found")
    except ProxyError as exc:
        return _refused(exc, cors)
    stored, changed = result
    metrics.observe_request("feedback", "none", "none", 200, 0.0, 0.0)
    return json_response({"feedback_id": stored.id, "status": done if changed else same}, headers=cors or None)


async def _update(state: ProxyState, request: Request, feedback_id: str, owner: str | None) -> Outcome:
    body = await read_json_object(request, min(MAX_FEEDBACK_BYTES, state.settings.max_body_bytes))
    value, comment = parse_change(body)
    return await state.ledger.update_feedback(feedback_id, time.time(), owner=owner, value=value, comment=comment)


async def _retract(state: ProxyState, request: Request, feedback_id: str, owner: str | None) -> Outcome:
    return await state.ledger.retract_feedback(feedback_id, time.time(), owner=owner)


async def put_feedback(request: Request) -> Response:
    """`PUT /v1/feedback/{id}`: a new value (same kind: a thumb stays a thumb) and/or comment."""
    return await _on_item(request, _update, "updated", "unchanged")


async def delete_feedback(request: Request) -> Response:
    """`DELETE /v1/feedback/{id}`: take the judgment back; again is a no-op with the same answer."""
    return await _on_item(request, _retract, "retracted", "retracted")
