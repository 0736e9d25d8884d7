"""The one error the local model raises: its message always says how to fix the problem."""

from __future__ import annotations


class LocalModelError(RuntimeError):
    """Anything that stops the local model from serving; the message says how to fix it."""
