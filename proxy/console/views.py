"""The console's pages and form actions: thin handlers over the registry, the ledger and the
admin API's label and approval code, rendered by autoescaped Jinja2 templates.

Off (404) unless the admin key is set. Every page but the login needs a session; every POST
needs the session's CSRF token in its form and, when the browser names one, our own `Origin`.
An error is a page for a browser (`Accept: text/html`) and the OpenAI error shape for anything
else, like every other endpoint.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import sqlite3
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from .. import admin
from ..bodies import read_body
from ..errors import Conflict, Forbidden, InvalidRequest, NotFound, ProxyError, RateLimited, Unauthorized
from ..ledger import DecisionRecord
from ..ratelimit import RateLimiter, retry_after
from ..registry import PRODUCTION
from ..responses import error_response
from ..state import ProxyState
from . import diff, plot, summary
from .session import COOKIE, Session, Sessions

HERE = Path(__file__).parent
PREFIX = "/console"
MAX_FORM_BYTES = 16 * 1024
LIST_VERSIONS = 8  # the newest versions linked from the list of specs
DECISIONS = 20  # the newest experiment decisions shown on a spec's page
log = logging.getLogger("speclearn.console")
SECURITY_HEADERS = {
    # everything from the proxy itself; no inline script; the plot is inline SVG markup
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
DONE = {"promoted", "rolled-back", "approved", "rejected"}  # ?done= after a form action


def _when(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value).replace("T", " ").replace("+00:00", " UTC") if value else ""


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return "–" if value is None else str(value)


TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters.update(when=_when, num=_num)


class LoginNeeded(Unauthorized):
    code = "session_required"


class _Console:
    """Per-app console objects, made on first use."""

    def __init__(self, state: ProxyState) -> None:
        self.sessions = Sessions.from_settings(state.settings)
        self.logins = RateLimiter(1 / 6, 10)  # per client address: 10 tries, then one per 6 s


def _console(request: Request, state: ProxyState) -> _Console:
    console = getattr(request.app.state, "console", None)
    if console is None:
        console = request.app.state.console = _Console(state)
    return console


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def render(
    request: Request, template: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> Response:
    html = TEMPLATES.get_template(template).render(prefix=PREFIX, request_path=request.url.path, **context)
    return HTMLResponse(html, status, {**SECURITY_HEADERS, **(headers or {})})


def _failure(request: Request, exc: ProxyError) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else {}
    if isinstance(exc, LoginNeeded) and request.method == "GET" and _wants_html(request):
        target = f"{PREFIX}/login?" + urllib.parse.urlencode({"next": request.url.path})
        return RedirectResponse(target, 303, headers=SECURITY_HEADERS)
    if _wants_html(request):
        return render(request, "error.html", exc.status, headers, error=exc, session=None)
    return error_response(exc, headers or None)


Handler = Callable[[Request, ProxyState], Awaitable[Response]]


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        state: ProxyState = request.app.state.proxy
        try:
            if state.settings.admin_key is None:
                raise NotFound(f"{request.method} {request.url.path}: Not Found")
            return await handler(request, state)
        except ProxyError as exc:
            return _failure(request, exc)

    return endpoint


def _session(request: Request, state: ProxyState) -> Session:
    session = _console(request, state).sessions.read(request.cookies.get(COOKIE))
    if session is None:
        raise LoginNeeded("log in to the console first (no session, or it expired)")
    return session


def _same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
        raise Forbidden("a console form must be sent from the console itself", code="cross_origin")


async def _form(request: Request) -> dict[str, str]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise InvalidRequest("send the form as application/x-www-form-urlencoded")
    raw = await read_body(request, MAX_FORM_BYTES)
    try:
        pairs = urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidRequest("the form is not UTF-8") from None
    return dict(pairs)


async def _posted(request: Request, state: ProxyState) -> tuple[Session, dict[str, str]]:
    """A console POST: same origin, a live session, and that session's CSRF token in the form."""
    _same_origin(request)
    session = _session(request, state)
    form = await _form(request)
    if not session.csrf_ok(form.get("csrf")):
        raise Forbidden("the form's CSRF token is missing or wrong: reload the page and try again", code="csrf_failed")
    return session, form


def _version_url(name: str, version: int, done: str | None = None) -> str:
    url = f"{PREFIX}/specs/{urllib.parse.quote(name)}/versions/{version}"
    return url + (f"?done={done}" if done else "")


# -- pages -----------------------------------------------------------------------------------
@page
async def home(request: Request, state: ProxyState) -> Response:
    _session(request, state)
    return RedirectResponse(f"{PREFIX}/specs", 303, headers=SECURITY_HEADERS)


@page
async def login_form(request: Request, state: ProxyState) -> Response:
    return render(request, "login.html", next=_safe_next(request.query_params.get("next")), error=None, session=None)


def _safe_next(target: str | None) -> str:
    """Only our own pages: never an absolute or scheme-relative URL."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/specs"


@page
async def login(request: Request, state: ProxyState) -> Response:
    _same_origin(request)
    console = _console(request, state)
    wait = console.logins.take(request.client.host if request.client else "unknown")
    if wait:
        raise RateLimited(f"too many login attempts: retry in {retry_after(wait)} s", retry_after=retry_after(wait))
    form = await _form(request)
    target = _safe_next(form.get("next"))
    assert state.settings.admin_key is not None
    try:
        state.check_admin(f"Bearer {form.get('key', '')}")
    except (Unauthorized, Forbidden):
        if not _wants_html(request):
            raise Unauthorized("that is not the admin key", code="invalid_admin_key") from None
        return render(request, "login.html", 401, next=target, error="That is not the admin key.", session=None)
    cookie, _ = console.sessions.issue()
    response = RedirectResponse(target, 303, headers=SECURITY_HEADERS)
    response.set_cookie(
        COOKIE, cookie, max_age=console.sessions.lifetime, path=PREFIX, httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


@page
async def logout(request: Request, state: ProxyState) -> Response:
    await _posted(request, state)
    response = RedirectResponse(f"{PREFIX}/login", 303, headers=SECURITY_HEADERS)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


@page
async def specs(request: Request, state: ProxyState) -> Response:
    session = _session(request, state)
    rows = []
    for name, spec_state in sorted(state.registry.snapshot.specs.items()):
        latest = spec_state.latest
        served = spec_state.serving  # what a request naming no version gets
        rows.append(
            {
                "name": name,
                "labels": sorted(spec_state.labels.items()),
                "shown": sorted(spec_state.versions)[-LIST_VERSIONS:],
                "older": max(0, len(spec_state.versions) - LIST_VERSIONS),
                "latest": latest,
                "tokens": summary.spec_tokens(served) if served else None,
                "holds": summary.holds_of(spec_state),
            }
        )
    return render(request, "specs.html", session=session, specs=rows)


async def _tallies(state: ProxyState, name: str) -> tuple[list[Any], int]:
    """The coarsest bucket that still gives a few points (a young spec has seconds of history)."""
    tallies: list[Any] = []
    for bucket in plot.BUCKETS:
        tallies = await state.ledger.thumb_tallies(name, bucket)
        if len({t.start for t in tallies}) >= plot.MIN_POINTS:
            break
    return tallies, bucket


async def _decisions(state: ProxyState, name: str) -> tuple[list[DecisionRecord], bool]:
    """The newest experiment decisions, newest first, and whether the ledger could be read."""
    try:
        return list(reversed(await state.ledger.decisions(name, limit=DECISIONS))), True
    except (ProxyError, sqlite3.Error) as exc:
        log.warning("console: cannot read the decision log of %s: %s", name, exc)
        return [], False


@page
async def spec(request: Request, state: ProxyState) -> Response:
    session = _session(request, state)
    spec_state = state.registry.snapshot.get(request.path_params["name"])
    tallies, bucket = await _tallies(state, spec_state.name)
    rates = plot.rates(tallies)
    versions = [spec_state.versions[v] for v in sorted(spec_state.versions, reverse=True)]
    decisions, readable = await _decisions(state, spec_state.name)
    return render(
        request, "spec.html", session=session, spec=spec_state, versions=versions, labels=summary.labels_of(spec_state),
        rates=rates, plot=plot.build(tallies, bucket), tokens={v.version: summary.spec_tokens(v) for v in versions},
        holds=summary.holds_of(spec_state), experiment=summary.experiment(spec_state, state.settings.canary_fraction),
        decisions=decisions, ledger_readable=readable,
    )  # fmt: skip


@page
async def version(request: Request, state: ProxyState) -> Response:
    session = _session(request, state)
    spec_state = state.registry.snapshot.get(request.path_params["name"])
    this = spec_state.resolve(int(request.path_params["version"]), include_held=True)  # held: to review it
    parent = summary.parent_of(this, spec_state)
    rows = diff.side_by_side(parent.text, this.text) if parent else []
    tallies, _ = await _tallies(state, spec_state.name)
    meta = this.meta
    done = request.query_params.get("done")
    return render(
        request, "version.html", session=session, spec=spec_state, this=this, parent=parent, rows=rows,
        changed=diff.changed(rows), labels=summary.labels_of(spec_state).get(this.version, []),
        production=spec_state.labels.get(PRODUCTION), rollback_to=summary.rollback_target(spec_state),
        tokens=summary.spec_tokens(this), principles=summary.principles(meta),
        dropped=summary.principles(meta, "dropped_principles"), gate=summary.flat(meta.get("gate")),
        cost=summary.flat(meta.get("cost")), window=summary.flat(meta.get("feedback_window")),
        rate=plot.rates(tallies).get(this.version), done=done if done in DONE else None,
        hold=spec_state.holds.get(this.version), experiment=summary.experiment(spec_state, state.settings.canary_fraction),
        held_for=meta.get("held_for") if meta.get("held_for") != "proposal" else "", proposal=meta.get("proposal"),
        proposals=meta.get("proposals") or [], voices=meta.get("voices", ""),
    )  # fmt: skip


# -- actions: the admin API's label and approval code ---------------------------------------
@page
async def promote(request: Request, state: ProxyState) -> Response:
    _, form = await _posted(request, state)
    name = request.path_params["name"]
    raw = form.get("version", "")
    if not raw.isdigit():
        raise InvalidRequest("'version' must be a version number", param="version")
    await admin.move_label(state, name, PRODUCTION, int(raw))
    return RedirectResponse(_version_url(name, int(raw), "promoted"), 303, headers=SECURITY_HEADERS)


@page
async def rollback(request: Request, state: ProxyState) -> Response:
    _, form = await _posted(request, state)
    name = request.path_params["name"]
    spec_state = state.registry.snapshot.get(name)
    current = spec_state.labels.get(PRODUCTION)
    expected = form.get("from")
    if expected is not None and expected != str(current):
        raise Conflict(f"production moved to v{current} meanwhile: reload and decide again", code="stale_form")
    target = summary.rollback_target(spec_state)
    if target is None:
        raise InvalidRequest(f"spec {name!r} has no earlier version to roll back to")
    await admin.move_label(state, name, PRODUCTION, target)
    return RedirectResponse(_version_url(name, target, "rolled-back"), 303, headers=SECURITY_HEADERS)


async def _decide(request: Request, state: ProxyState, approve: bool) -> Response:
    await _posted(request, state)
    name, number = request.path_params["name"], request.path_params["version"]
    await admin.decide_hold(state, name, number, approve)
    return RedirectResponse(
        _version_url(name, number, "approved" if approve else "rejected"), 303, headers=SECURITY_HEADERS
    )


@page
async def approve(request: Request, state: ProxyState) -> Response:
    return await _decide(request, state, approve=True)


@page
async def reject(request: Request, state: ProxyState) -> Response:
    return await _decide(request, state, approve=False)
