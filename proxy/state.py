"""What every handler needs, built once per worker at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .browser import FeedbackAccess
from .errors import Forbidden, Unauthorized
from .keys import bearer, same_secret
from .ledger import Ledger
from .registry import Registry
from .settings import Settings
from .upstream import Upstream
from .upstreams import Upstreams

if TYPE_CHECKING:
    from .tracing import Tracing


@dataclass(slots=True)
class ProxyState:
    settings: Settings
    registry: Registry
    ledger: Ledger
    upstream: Upstream | None
    ready: bool = False
    tracing: Tracing | None = None  # None unless OTEL_EXPORTER_OTLP_*ENDPOINT is set (proxy/tracing.py)
    feedback_access: FeedbackAccess = field(init=False)
    upstreams: Upstreams = field(init=False)  # the default upstream and every route's (proxy/upstreams.py)

    def __post_init__(self) -> None:
        self.feedback_access = FeedbackAccess(self.settings)
        self.upstreams = Upstreams(self.settings, self.upstream)

    def check_client(self, authorization: str | None) -> bool:
        """Authenticate a client; True when its Authorization header may go upstream.

        With proxy keys configured, the client's key is ours and is never forwarded.
        """
        keys = self.settings.api_keys
        if not keys:
            if self.feedback_access.keys:  # a publishable key is never forwarded upstream
                self._refuse_feedback_key(bearer(authorization))
            return True
        token = bearer(authorization)
        if token is None or not any(same_secret(token, k) for k in keys):
            self._refuse_feedback_key(token)
            raise Unauthorized("missing or invalid API key for this proxy")
        return False

    def _refuse_feedback_key(self, token: str | None) -> None:
        if self.feedback_access.is_feedback_key(token):
            raise Forbidden(
                "this is a publishable feedback key: it may only POST /v1/feedback", code="feedback_key_scope"
            )

    def check_admin(self, authorization: str | None) -> None:
        admin = self.settings.admin_key
        if admin is None:
            raise Forbidden("the admin API is disabled: set SPECLEARN_ADMIN_KEY to enable it")
        token = bearer(authorization)
        if token is None or not same_secret(token, admin.get_secret_value()):
            self._refuse_feedback_key(token)
            raise Unauthorized("missing or invalid admin key", code="invalid_admin_key")
