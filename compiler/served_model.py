"""Which model the compiler asks when none is configured: the one the spec's own traffic used.

A hosted upstream (OpenAI, vLLM) serves only its own model names, so a fixed default such as
"default" is a 404 `model_not_found` on every call. The team's traffic already names a model the
upstream serves and the key may use: the one most of the spec's answered requests in the window
used (as the ledger recorded it), else most of all specs' (a new spec), else the only model the
endpoint lists (`GET /models`, a vLLM or llama.cpp server), else "default" (which llama.cpp
accepts), said so in the round's notes.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from proxy.ledger import Ledger

FALLBACK = "default"


@dataclass(frozen=True)
class ModelChoice:
    model: str
    why: str  # one line for the report and the doctor: which rows or setting chose it

    def describe(self) -> str:
        return f"compiler model {self.model}: {self.why}"


def most_used(counts: dict[str, int]) -> str:
    """The most counted model; ties go to the first name in sort order, so a round is repeatable."""
    return min(counts, key=lambda m: (-counts[m], m))


async def from_traffic(ledger: Ledger, spec: str | None, since: float, days: float) -> ModelChoice | None:
    """The model most of `spec`'s answered requests since `since` used, else all specs'."""
    for scope in [spec, None] if spec is not None else [None]:
        counts = await ledger.model_counts(scope, since)
        if counts:
            model, total = most_used(counts), sum(counts.values())
            whose = f"spec {scope}'s" if scope is not None else "all specs'"
            also = f" (spec {spec} has none yet)" if spec is not None and scope is None else ""
            return ModelChoice(model, f"used by {counts[model]} of {total} of {whose} answered requests "
                                      f"in the last {days:g} days{also}")  # fmt: skip
    return None


async def from_endpoint(http: httpx.AsyncClient) -> ModelChoice | None:
    """The endpoint's only model, when `GET models` lists exactly one; None otherwise."""
    try:
        resp = await http.get("models")
        ids = [m["id"] for m in resp.json()["data"]] if resp.status_code == 200 else []
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    if len(ids) != 1 or not isinstance(ids[0], str):
        return None
    return ModelChoice(ids[0], "the only model the endpoint lists (no answered requests recorded a model)")


def fallback() -> ModelChoice:
    return ModelChoice(FALLBACK, "no answered request recorded a model and the endpoint lists none: "
                                 "set SPECLEARN_COMPILER_MODEL")  # fmt: skip
