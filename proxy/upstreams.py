"""Several upstreams: each route's list of upstreams, and retries then fallback before the first byte.

A route (`SPECLEARN_ROUTES`) maps a client model name to upstreams tried in order (the first is
primary); a request that names no route goes to the default upstream (`SPECLEARN_UPSTREAM_URL`).
One `Upstream` client (one connection pool) exists per distinct (URL, key), however many routes
share it.

Retries: a connect error, a connection reset, a connect timeout, 429 or 500/502/503/504 is tried
again on the same upstream after an exponential backoff with jitter (or the `Retry-After` the
upstream asked for, seconds or an HTTP date), up to `upstream_retries` times while the waits fit in
`upstream_retry_budget` seconds; then the route's next upstream is tried. Nothing is retried once a
byte could have reached the client: a buffered answer is retried only before it is passed on, and a
stream is relayed as soon as its 200 head arrives, so a stream that breaks later is never retried.
A read timeout is not retried either: the upstream may still be generating, and a second wait as
long would double the worst case. The happy path is the single-attempt path plus one counter.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from . import http1, metrics
from .settings import Settings
from .upstream import Upstream, UpstreamResponse, classify

DEFAULT_ROUTE = "default"  # the metric label of requests that name no route
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_BASE = 0.1  # seconds before the first retry (half of it fixed, half jitter), doubling each time
BACKOFF_CAP = 2.0


@dataclass(frozen=True, slots=True)
class Hop:
    """One upstream of a route: its client and the model name it serves."""

    name: str  # the upstream's base URL without credentials: what the ledger records
    client: Upstream
    model: str | None  # the model to send; None = leave the body's
    route: str  # the metric label: the route's name, or `default`
    answered: Any  # the route's attempts counter child for `ok`, looked up once (the happy path's only cost)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int  # per upstream, after the first attempt
    budget: float  # seconds of waiting one request may spend on retries in all


class UpstreamFailed(Exception):
    """Every attempt failed without an answer: `cause` is the last failure, `hop` where it happened."""

    def __init__(self, hop: Hop, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.hop = hop
        self.cause = cause


@dataclass(slots=True)
class Answer:
    """What the client gets: the upstream that answered, its response and the whole body
    (None: a stream to relay, still open)."""

    hop: Hop
    response: UpstreamResponse
    data: bytes | None


def public_name(url: str) -> str:
    """The URL without user or password, fit to store and show."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class Upstreams:
    """The default upstream and every route's upstreams, built once per worker at start-up."""

    def __init__(self, settings: Settings, default: Upstream | None) -> None:
        self.default = default
        self.policy = RetryPolicy(settings.upstream_retries, settings.upstream_retry_budget)
        self._clients: dict[tuple[str, str | None], Upstream] = {}
        if default is not None:
            key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
            self._clients[(default.base_url, key)] = default
        default_name = public_name(default.base_url) if default is not None else ""
        self._default_hops: tuple[Hop, ...] = (
            (_hop(default_name, default, None, DEFAULT_ROUTE),) if default is not None else ()
        )
        self.routes: dict[str, tuple[Hop, ...]] = {}
        for alias, targets in route_table(settings).items():
            hops = []
            for t in targets:  # a route without upstreams goes to the default one, if there is one
                if t.url is not None:
                    hops.append(_hop(public_name(t.url), self._client(settings, t.url, t.api_key), t.model, alias))
                elif default is not None:
                    hops.append(_hop(default_name, default, t.model, alias))
            self.routes[alias] = tuple(hops)

    def _client(self, settings: Settings, url: str, key: str | None) -> Upstream:
        client = self._clients.get((url, key))
        if client is None:
            client = self._clients[(url, key)] = Upstream(
                url, key, settings.connect_timeout, settings.read_timeout, settings.max_upstream_connections
            )
        return client

    def hops(self, model: object) -> tuple[Hop, ...]:
        """The upstreams to try in order for a client model name: its route's, else the default."""
        if isinstance(model, str):
            hops = self.routes.get(model)
            if hops is not None:
                return hops
        return self._default_hops

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()


def _hop(name: str, client: Upstream, model: str | None, route: str) -> Hop:
    return Hop(name, client, model, route, metrics.attempt_counter(route, "ok"))


def retry_after(headers: Iterable[tuple[bytes, bytes]], now: float) -> float | None:
    """Seconds the upstream asked to wait (`Retry-After`: seconds or an HTTP date); None if unsaid."""
    for name, value in headers:
        if name.lower() != b"retry-after":
            continue
        text = value.decode("latin-1").strip()
        try:
            return max(0.0, float(text))
        except ValueError:
            pass
        try:
            return max(0.0, parsedate_to_datetime(text).timestamp() - now)
        except (TypeError, ValueError, IndexError):
            return None
    return None


def backoff(attempt: int) -> float:
    """Exponential with jitter: half the step fixed, half random, so retrying clients spread out."""
    step: float = min(BACKOFF_CAP, BACKOFF_BASE * 2.0**attempt)
    return step / 2 + random.uniform(0, step / 2)


def _retryable(exc: BaseException) -> bool:
    """Connect errors, resets and connect timeouts: the request surely did not finish upstream."""
    if isinstance(exc, http1.ReadTimeout | asyncio.TimeoutError):
        return False
    return isinstance(exc, http1.TransportError | OSError)


def _payload(body: dict[str, Any], model: str | None) -> bytes:
    if model is not None:
        body["model"] = model
    return orjson.dumps(body)


async def exchange(
    upstreams: Upstreams,
    hops: tuple[Hop, ...],
    path: str,
    client_headers: list[tuple[bytes, bytes]],
    forward_auth: bool,
    body: dict[str, Any],
    streaming: bool,
) -> Answer:
    """Send `body` to the route's upstreams until one answers (see the module doc); the last
    failure is raised, or the last retryable answer returned, when every attempt is spent.
    `body["model"]` is left as the answering upstream was sent."""
    policy = upstreams.policy
    deadline: float | None = None
    failure: UpstreamFailed | None = None
    last: Answer | None = None
    for hop in hops:
        headers = hop.client.headers(client_headers, forward_auth)
        payload = _payload(body, hop.model)
        attempt = 0
        while True:
            wait: float | None = None
            try:
                response = await hop.client.send("POST", path, headers, payload)
            except Exception as exc:  # a transport failure: counted, then retried or raised
                metrics.count_attempt(hop.route, classify(exc)[1])
                if not _retryable(exc):
                    raise UpstreamFailed(hop, exc) from exc
                failure, last = UpstreamFailed(hop, exc), None
            else:
                status = response.status
                if streaming and status == 200 and response.content_type.startswith("text/event-stream"):
                    hop.answered.inc()
                    return Answer(hop, response, None)
                try:
                    data = await response.read()
                except Exception as exc:  # broke mid-body: nothing reached the client yet
                    metrics.count_attempt(hop.route, classify(exc)[1])
                    if not _retryable(exc):
                        raise UpstreamFailed(hop, exc) from exc
                    failure, last = UpstreamFailed(hop, exc), None
                else:
                    if status not in RETRY_STATUSES:
                        hop.answered.inc()
                        return Answer(hop, response, data)
                    metrics.count_attempt(hop.route, "status_429" if status == 429 else "status_5xx")
                    failure, last = None, Answer(hop, response, data)
                    wait = retry_after(response.headers_for_client(), time.time())
                finally:
                    response.close()
            now = time.monotonic()
            if deadline is None:
                deadline = now + policy.budget
            if attempt >= policy.retries:
                break
            delay = backoff(attempt) if wait is None else wait
            if now + delay > deadline:
                break  # the wait does not fit the budget: the next upstream, or the last answer
            await asyncio.sleep(delay)
            attempt += 1
    if last is not None:
        return last
    assert failure is not None, "a route has at least one upstream"
    raise failure


# -- the route table without clients: for a process that calls a route's upstream itself ---------
@dataclass(frozen=True, slots=True)
class Target:
    """One upstream of a route as configured: where, which model name, which key (never shown)."""

    url: str | None  # None: the default upstream (`SPECLEARN_UPSTREAM_URL`, else the embedded model)
    model: str | None  # the model name sent there
    api_key: str | None = field(default=None, repr=False)


def route_table(settings: Settings) -> dict[str, tuple[Target, ...]]:
    """Every route's upstreams in the order they are tried, keys read now (from their variable or
    file): what `Upstreams` builds its hops from, and what the compiler follows (compiler/served_model.py)."""
    return {
        alias: tuple(Target(u.url, u.model or route.model, u.api_key()) for u in route.upstreams)
        or (Target(None, route.model),)
        for alias, route in settings.routes.items()
    }
