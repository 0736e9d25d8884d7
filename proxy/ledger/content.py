"""What of an inference or a judgment the ledger keeps: `SPECLEARN_LEDGER_CONTENT`.

- `full` (default): prompts, answers and comments as sent.
- `redacted`: every text (messages, answer, tool-call arguments, error, comment, the client's
  metadata and tags) through `proxy.redaction`, so `[EMAIL]` stands where an address was; content
  that cannot be read (a `data:` URI: an image, audio, a file) becomes `[DATA]`; a user id that
  holds an e-mail address or a phone number is stored as a keyed hash (`pii:...`).
- `none`: no prompt, answer or comment at all; ids, numbers (usage, latency, sampling
  parameters) and the app's own labels (metadata, tags) only, every user id as a keyed hash.

Each row says which policy stored it (`metadata["content"]`; absent = full). Inference rows are
changed in the ledger's background writer, in a worker thread, never in the request handler;
judgments before they are stored. The keyed hash uses the ledger's own key (as hashed client
addresses do, proxy/identity.py), so `speclearn feedback forget alice@example.com` finds them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..identity import ADDRESS_PREFIX
from .records import FeedbackRecord, InferenceRecord

if TYPE_CHECKING:
    from ..redaction import Redactor
    from ..settings import Settings

FULL, REDACTED, NONE = "full", "redacted", "none"
PSEUDONYM_PREFIX = "pii:"
DATA = "[DATA]"
USER_KEYS = frozenset({"user", "safety_identifier"})
# strings that name things rather than say them: never rewritten
STRUCTURAL = frozenset({"model", "role", "type", "id", "tool_call_id", "name", "object", "status", "detail", "format"})
# what `none` keeps of a request: numbers and switches, never text
KEPT_PARAMS = frozenset({
    "model", "stream", "temperature", "top_p", "max_tokens", "max_completion_tokens", "max_output_tokens", "n",
    "seed", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "parallel_tool_calls", "store",
    "service_tier", "reasoning_effort",
})  # fmt: skip


class ContentPolicy:
    """Applies one content mode to rows before they are stored."""

    def __init__(self, mode: str = FULL, redactor: Redactor | None = None) -> None:
        if mode == REDACTED and redactor is None:
            raise ValueError("the redacted mode needs a redactor")
        self.mode = mode
        self.redactor = redactor
        self.key = b""  # the ledger's key (set when it starts): user ids are hashed with it

    @classmethod
    def from_settings(cls, settings: Settings) -> ContentPolicy:
        """The configured mode; `redacted` imports the `redact` extra (MissingExtra without it)."""
        if settings.ledger_content != REDACTED:
            return cls(settings.ledger_content)
        from ..redaction import Redactor, read_patterns_file

        patterns = dict(settings.redact_patterns)
        if settings.redact_patterns_file is not None:
            patterns.update(read_patterns_file(Path(settings.redact_patterns_file).read_text()))
        return cls(REDACTED, Redactor(patterns, settings.redact_phone_regions))

    @property
    def changes_rows(self) -> bool:
        return self.mode != FULL

    # -- user ids ----------------------------------------------------------------------------
    def pseudonym(self, user: str) -> str:
        digest = hmac.new(self.key, user.encode(), hashlib.sha256).hexdigest()
        return PSEUDONYM_PREFIX + digest[:24]

    def user(self, user: Any) -> Any:
        """A user id as stored: hashed in `none`, and in `redacted` when it holds personal data."""
        if (
            not isinstance(user, str)
            or not user
            or self.mode == FULL
            or user.startswith((ADDRESS_PREFIX, PSEUDONYM_PREFIX))
        ):
            return user
        if self.mode == NONE or (self.redactor is not None and self.redactor.find(user)):
            return self.pseudonym(user)
        return user

    def stored_forms(self, user: str) -> list[str]:
        """Every form `user` may be stored under, whatever mode stored it (forget looks for each)."""
        return [user] if user.startswith((ADDRESS_PREFIX, PSEUDONYM_PREFIX)) else [user, self.pseudonym(user)]

    # -- text ----------------------------------------------------------------------------------
    def text(self, value: str | None) -> str | None:
        """One free text as this mode stores it (None in `none`)."""
        if value is None or self.mode == FULL:
            return value
        if self.mode == NONE:
            return None
        assert self.redactor is not None
        return DATA if value.startswith("data:") else self.redactor.redact(value)

    def _walk(self, value: Any, key: str | None = None) -> Any:
        """A JSON value with every free text redacted; names (model, role, ...) kept, user ids hashed."""
        if isinstance(value, str):
            if key in USER_KEYS:
                return self.user(value)
            return value if key in STRUCTURAL else self.text(value)
        if isinstance(value, list):
            return [self._walk(v) for v in value]
        if isinstance(value, dict):
            return {k: self._walk(v, k) for k, v in value.items()}
        return value

    # -- rows ------------------------------------------------------------------------------------
    def inference(self, rec: InferenceRecord) -> InferenceRecord:
        """The row as this mode stores it (the same object in `full`)."""
        if self.mode == FULL:
            return rec
        meta = dict(rec.metadata or {})
        if "user" in meta:
            meta["user"] = self.user(meta["user"])
        meta["content"] = self.mode
        if self.mode == NONE:
            request = {k: v for k, v in rec.request.items() if k in KEPT_PARAMS and not isinstance(v, (dict, list))}
            return dataclasses.replace(rec, request=request, response_text=None, tool_calls=None, metadata=meta)
        if isinstance(meta.get("metadata"), dict):
            meta["metadata"] = self._walk(meta["metadata"])
        return dataclasses.replace(
            rec, request=self._walk(rec.request), response_text=self.text(rec.response_text),
            tool_calls=self._walk(rec.tool_calls), error=self.text(rec.error), metadata=meta,
        )  # fmt: skip

    def stripped(self, rec: InferenceRecord) -> InferenceRecord:
        """`none`'s row: what is stored when redaction itself failed, so no text slips through."""
        none = ContentPolicy(NONE)
        none.key = self.key
        return none.inference(rec)

    def feedback(self, fb: FeedbackRecord) -> FeedbackRecord:
        """The judgment as this mode stores it (the same object in `full`)."""
        if self.mode == FULL:
            return fb
        tags = fb.tags if self.mode == NONE or not fb.tags else {k: self.text(v) or "" for k, v in fb.tags.items()}
        new = dataclasses.replace(fb, comment=self.text(fb.comment), user_id=self.user(fb.user_id), tags=tags)
        return fb if new == fb else new
