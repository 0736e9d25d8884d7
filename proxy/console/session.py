"""Console logins: a signed, expiring session cookie carrying its own CSRF token.

The cookie is `payload.signature`, both base64url; the payload is `{"exp": unix time, "csrf": token}`
and the signature an HMAC-SHA256 under a key derived from the admin key and a server secret
(`SPECLEARN_CONSOLE_SECRET`, or one drawn per server start). Changing the admin key or restarting
without a configured secret therefore ends every session. Nothing is stored server-side, so every
worker and replica that shares the secret accepts the same cookie.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from ..keys import same_secret
from ..settings import Settings

COOKIE = "speclearn_console"
PROCESS_SECRET = secrets.token_urlsafe(32)  # when none is configured (`speclearn serve` sets one)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    expires: float
    csrf: str

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and same_secret(token, self.csrf)


class Sessions:
    def __init__(self, admin_key: str, secret: str, lifetime: int, clock: Callable[[], float] = time.time) -> None:
        self._key = hmac.new(
            secret.encode(), b"speclearn console session\0" + admin_key.encode(), hashlib.sha256
        ).digest()
        self.lifetime = lifetime
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> Sessions:
        assert settings.admin_key is not None
        secret = settings.console_secret.get_secret_value() if settings.console_secret else PROCESS_SECRET
        return cls(settings.admin_key.get_secret_value(), secret, settings.console_session_seconds)

    def _sign(self, data: str) -> str:
        return _b64(hmac.new(self._key, data.encode(), hashlib.sha256).digest())

    def issue(self) -> tuple[str, Session]:
        """A new session and its cookie value."""
        session = Session(int(self.clock()) + self.lifetime, secrets.token_urlsafe(24))
        data = _b64(orjson.dumps({"exp": session.expires, "csrf": session.csrf}))
        return f"{data}.{self._sign(data)}", session

    def read(self, cookie: str | None) -> Session | None:
        """The session in a cookie, or None when it is missing, forged, malformed or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        data, signature = cookie.split(".")
        if not same_secret(signature, self._sign(data)):
            return None
        try:
            payload = orjson.loads(_unb64(data))
            session = Session(float(payload["exp"]), str(payload["csrf"]))
        except (binascii.Error, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return None
        return session if session.expires > self.clock() else None
