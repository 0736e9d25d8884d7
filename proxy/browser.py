"""Feedback straight from browsers: CORS on `/v1/feedback`, publishable keys and their rate limits.

A publishable key (`SPECLEARN_FEEDBACK_KEYS`) lives in web pages, so it can do one thing: post
feedback, and change or retract the feedback it posted (`/v1/feedback/{id}`), within a token
bucket per key and per client address. Everything else refuses it (`ProxyState.check_client`,
`check_admin`). Browsers may call these from the configured origins (`SPECLEARN_CORS_ORIGINS`)
and from the proxy's own pages; a request that names any other `Origin` is refused outright,
since a form-encoded POST reaches the server without a preflight.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .errors import Forbidden, RateLimited
from .keys import same_secret
from .ratelimit import RateLimiter, retry_after
from .responses import error_response
from .settings import Settings

ALLOWED_HEADERS = "authorization, content-type, x-inference-id, x-user-id"
PREFLIGHT_MAX_AGE = "600"


class FeedbackAccess:
    def __init__(self, settings: Settings) -> None:
        self.origins = {o.rstrip("/") for o in settings.cors_origins}
        self.keys = list(settings.feedback_keys)
        self.per_key = RateLimiter(settings.feedback_rate_per_key, settings.feedback_burst_per_key)
        self.per_address = RateLimiter(settings.feedback_rate_per_address, settings.feedback_burst_per_address)

    def is_feedback_key(self, token: str | None) -> bool:
        return token is not None and any(same_secret(token, k) for k in self.keys)

    # -- CORS --------------------------------------------------------------------------------
    def origin(self, request: Request) -> str | None:
        """The cross-origin caller to answer with CORS headers; None for a same-origin or
        non-browser request; `Forbidden` for an origin that is not allowed."""
        origin = request.headers.get("origin")
        if origin is None:
            return None
        origin = origin.rstrip("/")
        if origin in self.origins:
            return origin
        if origin == f"{request.url.scheme}://{request.headers.get('host', '')}":
            return None  # the proxy's own pages
        raise Forbidden(
            f"origin {origin!r} may not send feedback: see SPECLEARN_CORS_ORIGINS", code="origin_not_allowed"
        )

    @staticmethod
    def cors_headers(origin: str | None) -> dict[str, str]:
        if origin is None:
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    def preflight(self, request: Request, methods: str = "POST", allow: str = "POST, OPTIONS") -> Response:
        """`OPTIONS /v1/feedback` (POST) or `/v1/feedback/{id}` (PUT, DELETE): with a key and a
        JSON body, from allowed origins."""
        try:
            origin = self.origin(request)
        except Forbidden as exc:
            return error_response(exc, {"Vary": "Origin"})
        headers = {
            **self.cors_headers(origin),
            "Access-Control-Allow-Methods": methods,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
            "Allow": allow,
        }
        return Response(status_code=204, headers=headers)

    # -- rate limits --------------------------------------------------------------------------
    def limit(self, key: str, address: str) -> None:
        """One request's worth from the key's and the address's buckets, or `RateLimited`."""
        for limiter, bucket, what in ((self.per_key, key, "key"), (self.per_address, address, "client address")):
            wait = limiter.take(bucket)
            if wait:
                seconds = retry_after(wait)
                raise RateLimited(f"too much feedback from this {what}: retry in {seconds} s", retry_after=seconds)
