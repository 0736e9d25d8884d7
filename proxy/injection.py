"""How the spec enters a request. The client's own lists are never mutated: the ledger stores them
as sent, without the spec."""

from __future__ import annotations

from typing import Any

from .settings import InjectionMode

INSTRUCTION_ROLES = frozenset({"system", "developer"})


def inject_chat(body: dict[str, Any], spec_text: str, mode: InjectionMode) -> None:
    """The spec as a system message: first (prepend), after the client's leading system/developer
    messages (append), or instead of them (replace)."""
    messages: list[Any] = body["messages"]
    spec_message = {"role": "system", "content": spec_text}
    if mode == "prepend":
        body["messages"] = [spec_message, *messages]
        return
    if mode == "replace":
        body["messages"] = [spec_message, *(m for m in messages if m.get("role") not in INSTRUCTION_ROLES)]
        return
    split = 0
    while split < len(messages) and messages[split].get("role") in INSTRUCTION_ROLES:
        split += 1
    body["messages"] = [*messages[:split], spec_message, *messages[split:]]


def inject_responses(body: dict[str, Any], spec_text: str, mode: InjectionMode) -> None:
    """The Responses API has `instructions` for exactly this."""
    own = body.get("instructions")
    if not own or mode == "replace":
        body["instructions"] = spec_text
    elif mode == "prepend":
        body["instructions"] = f"{spec_text}\n\n{own}"
    else:
        body["instructions"] = f"{own}\n\n{spec_text}"
