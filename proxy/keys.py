"""Reading and comparing the keys clients send (`Authorization: Bearer ...`)."""

from __future__ import annotations

import hashlib
import hmac


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison, as bytes: `hmac.compare_digest` refuses a str with non-ASCII
    characters, which a header may well hold."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))


def fingerprint(key: str) -> str:
    """16 hex digits naming a key in stored rows, so the key itself is never stored."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
