"""Which model the compiler asks when none is configured: the one the spec's own traffic used,
where the proxy sent it.

A hosted upstream (OpenAI, vLLM) serves only its own model names, so a fixed default such as
"default" is a 404 `model_not_found` on every call. The team's traffic already names a model the
upstream serves and the key may use: the one most of the spec's answered requests in the window
used (as the ledger recorded it), else most of all specs' (a new spec), else the only model the
endpoint lists (`GET /models`, a vLLM or llama.cpp server), else "default" (which llama.cpp
accepts), said so in the round's notes.

With routes (`SPECLEARN_ROUTES`) that model may live on another upstream, behind another key.
The ledger's `model` column holds the upstream's name for the model, not the client's: the
`model` of the upstream's answer, else the name the proxy sent (a route's upstream `model`).
So the traffic's model is traced back to the route that sends it (`recorded_route`), and that
route is then followed as the proxy follows it (proxy/upstreams.py `route_table`, the table the
proxy builds its hops from): its first upstream, with that upstream's key and model name. Its
fallbacks are not tried: the LLM client's own retries apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import httpx

from proxy.ledger import Ledger
from proxy.settings import Settings
from proxy.upstreams import public_name, route_table

FALLBACK = "default"
# a dated snapshot of the name sent: OpenAI answers `gpt-4o-mini` as `gpt-4o-mini-2024-07-18`
SNAPSHOT = re.compile(r"-\d{4}-?\d{2}-?\d{2}$")


@dataclass(frozen=True)
class ModelChoice:
    model: str
    why: str  # one line for the report and the doctor: which rows or setting chose it, which route
    route: str | None = None  # the route followed; None: the compiler's endpoint as configured
    base_url: str | None = None  # the route's first upstream; None: the compiler's endpoint
    api_key: str | None = field(default=None, repr=False)  # that upstream's key: used, never shown

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


def recorded_route(settings: Settings, recorded: str, spec: str | None) -> str | None:
    """The route whose traffic the ledger recorded as `recorded` (an upstream's name, see the
    module doc): one with an upstream sending that name, else the route of that name, else one
    sending the name `recorded` is a dated snapshot of. Of several, the route serving `spec`
    first, then one whose first upstream sends it, then the first configured. None: no route
    sends it, so the traffic went to the default upstream."""
    table = route_table(settings)
    exact = [r for r, targets in table.items() if any(t.model == recorded for t in targets)]
    if exact or recorded in table:
        found = exact or [recorded]
    else:
        sent = SNAPSHOT.sub("", recorded)
        found = [r for r, targets in table.items() if any(t.model == sent for t in targets)]
        recorded = sent
    if not found:
        return None
    order = list(table)
    return min(found, key=lambda r: (settings.routes[r].spec != spec, table[r][0].model != recorded, order.index(r)))


def through_routes(choice: ModelChoice, settings: Settings, spec: str | None) -> ModelChoice:
    """`choice` (a model the traffic recorded) as the proxy reaches it: the first upstream of its
    route, that upstream's key and model name; unchanged when no route sends it."""
    route = recorded_route(settings, choice.model, spec)
    if route is None:
        return choice
    first = route_table(settings)[route][0]
    model = first.model or choice.model
    where = f"its first upstream {public_name(first.url)}" if first.url is not None else "the default upstream"
    also = f" (the ledger recorded {choice.model})" if model != choice.model else ""
    why = f"{choice.why}; route {route}: {where} as {model}{also}"
    return ModelChoice(model, why, route, first.url, first.api_key)
