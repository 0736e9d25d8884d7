"""What a hosted endpoint refuses, learnt from its own answers, and how the compiler's requests adapt.

OpenAI's reasoning models refuse `max_tokens` (400 `unsupported_parameter`: "Use
'max_completion_tokens' instead.") and any temperature but their default (400
`unsupported_value`); some models refuse logprobs (400, or 403 "You are not allowed to request
logprobs from this model"), others simply answer without them. Each refusal is learnt once per
(endpoint, model), kept for the process, so the sidecar's next round starts adapted, and every
round that sends an adapted request says so once in its cost notes (`Budget.note`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from .errors import LLMRefused


@dataclass
class ModelQuirks:
    """What one model at one endpoint was found to refuse or lack."""

    model: str
    completion_tokens: bool = False  # `max_tokens` refused: send `max_completion_tokens`
    default_temperature: bool = False  # a set temperature refused: send none (the model's default)
    logprobs: bool | None = None  # None: not asked yet; False: refused, or answered without them
    n: bool | None = None  # several sampled answers per request (`n`); False: refused

    def notes(self, reasoning_tokens: int) -> dict[str, str]:
        """The adaptations in effect, keyed so that a round says each once."""
        out: dict[str, str] = {}
        if self.completion_tokens:
            out[f"{self.model}:max_tokens"] = (
                f"{self.model} refuses max_tokens: sent max_completion_tokens "
                f"(+{reasoning_tokens} tokens for its reasoning)"
            )
        if self.default_temperature:
            out[f"{self.model}:temperature"] = f"{self.model} refuses a set temperature: sent its default"
        if self.n is False:
            out[f"{self.model}:n"] = f"{self.model} refuses n: one answer per vote"
        return out


class Quirks:
    """Every (endpoint, model) this process has talked to; shared by the compiler's clients."""

    def __init__(self) -> None:
        self._by: dict[tuple[str, str], ModelQuirks] = {}

    def of(self, base_url: str, model: str) -> ModelQuirks:
        key = (base_url.rstrip("/"), model)
        if key not in self._by:
            self._by[key] = ModelQuirks(model)
        return self._by[key]


def adapt(body: dict[str, Any], q: ModelQuirks, reasoning_tokens: int) -> dict[str, Any]:
    """The request as this model takes it; `body` itself (the cache key's) is left alone."""
    sent = dict(body)
    if q.completion_tokens and "max_tokens" in sent:
        sent["max_completion_tokens"] = sent.pop("max_tokens") + reasoning_tokens
    if q.default_temperature:
        sent.pop("temperature", None)
    if q.logprobs is False:
        sent.pop("logprobs", None)
        sent.pop("top_logprobs", None)
    if q.n is False:
        sent.pop("n", None)
    return sent


def error_fields(resp: httpx.Response) -> tuple[str, str | None, str | None]:
    """(message, code, param) of an error answer, in OpenAI's shape or as plain text."""
    try:
        err = resp.json().get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict):
        code, param = err.get("code"), err.get("param")
        return str(err.get("message") or ""), str(code) if code else None, str(param) if param else None
    if isinstance(err, str):
        return err, None, None
    return resp.text[:300], None, None


def learn(q: ModelQuirks, resp: httpx.Response, sent: dict[str, Any]) -> bool:
    """Record what a 400/403 refused, if it is something a changed request avoids; True: retry."""
    if resp.status_code not in (400, 403):
        return False
    message, _, param = error_fields(resp)
    low = message.lower()
    if "max_tokens" in sent and (param == "max_tokens" or "max_completion_tokens" in low):
        q.completion_tokens = True
        return True
    if "temperature" in sent and (param == "temperature" or "'temperature'" in low):
        q.default_temperature = True
        return True
    if "n" in sent and param == "n":
        q.n = False
        return True
    if "logprobs" in sent and q.logprobs is not False:
        # said so (param or message), or a bare 400 from a server that cannot say why: the
        # request without logprobs is still a vote, read from the answer's text
        if param in ("logprobs", "top_logprobs") or "logprob" in low or resp.status_code == 400:
            q.logprobs = False
            return True
    return False


def refusal(resp: httpx.Response, model: str, base_url: str, setting: str = "SPECLEARN_COMPILER_MODEL") -> LLMRefused:
    """The error for a 4xx no adaptation avoids, in words that say what to change (`setting`
    names the model's)."""
    message, code, _ = error_fields(resp)
    status = resp.status_code
    if status == 404 and (code == "model_not_found" or "model" in message.lower()):
        text = f"{base_url} does not serve model `{model}` ({code or status}): set {setting}"
    elif status in (401, 403) and "logprob" not in message.lower():
        text = (f"{base_url} refused the API key ({code or status}): set SPECLEARN_UPSTREAM_API_KEY "
                f"or SPECLEARN_COMPILER_API_KEY")  # fmt: skip
    else:
        text = f"{base_url} refused the request: HTTP {status} {code or ''}: {message[:300]}".replace("  ", " ")
    return LLMRefused(text, status=status, code=code, detail=message)
