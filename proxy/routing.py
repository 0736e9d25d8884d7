"""Which spec (and which upstream model) a request gets.

Precedence: the `X-Spec` header, then the path form `/specs/NAME/v1/...`, then a model alias
route's spec, then the spec named `default`. A spec named without a version serves
`SpecState.serving` (label production, else the newest version a person published unlabelled;
never a candidate or a compiled version). A header or path that names an unknown spec, or a spec
with nothing to serve by default, is an error, not a silent fallback: the client asked for
something specific.

The canary: a request that names a spec but no version gets the `candidate` label with the share
`canary_fraction`, assigned by a stable hash of (spec name, unit id), where the unit is the end user
(the body's `user`, else `X-User-Id`), else the session (`X-Session-Id`), else the request itself
(random). So one user, or one conversation, keeps its version while the labels stay put.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from hashlib import blake2b

from .registry import RegistrySnapshot, SpecState, SpecVersion
from .registry.base import check_name
from .settings import InjectionMode, Settings

NONE = "none"
CANDIDATE = "candidate"
PRODUCTION = "production"
USER, SESSION, REQUEST = "user", "session", "request"  # assignment units, most stable first
_SCALE = float(2**64)


@dataclass(frozen=True, slots=True)
class Target:
    spec: SpecVersion | None
    upstream_model: str | None  # the model to send upstream; None = leave the body's model
    injection: InjectionMode
    arm: str | None = None  # candidate | production when the canary split chose; None when pinned

    @property
    def version_header(self) -> str:
        return self.spec.ref if self.spec else NONE


def parse_ref(value: str) -> tuple[str, str | None]:
    """`NAME`, `NAME@LABEL` or `NAME@VERSION` → (name, ref)."""
    name, _, ref = value.strip().partition("@")
    return check_name(name), (ref or None)


def resolve(
    snapshot: RegistrySnapshot,
    settings: Settings,
    header: str | None,
    path_spec: str | None,
    model: object,
    unit_id: str | None = None,
) -> Target:
    """`unit_id` is the user or session id the canary split hashes (None: per request)."""
    route = settings.routes.get(model) if isinstance(model, str) and settings.routes else None
    injection = route.injection if route and route.injection else settings.injection
    upstream_model = route.model if route else None

    chosen = header if header is not None else path_spec
    if chosen is None and route is not None and route.spec:
        chosen = route.spec
    if chosen is not None:
        if chosen.strip().lower() == NONE:
            return Target(None, upstream_model, injection)
        name, ref = parse_ref(chosen)
        state = snapshot.get(name)
        if ref is not None:
            return Target(state.resolve(ref), upstream_model, injection)
        return _pick(state, settings.canary_fraction, unit_id, upstream_model, injection)

    default = snapshot.specs.get(settings.default_spec)
    # (a default spec with nothing to serve by default, such as only a candidate or versions
    # awaiting approval, serves nothing, as if it had no version)
    if default is not None and default.serving is not None:
        return _pick(default, settings.canary_fraction, unit_id, upstream_model, injection)
    return Target(None, upstream_model, injection)


def in_canary(name: str, unit_id: str | None, fraction: float) -> bool:
    """Stable per (spec, unit): the first 8 bytes of blake2b(name NUL unit) as a fraction of 2**64."""
    if unit_id is None:
        return random.random() < fraction
    digest = blake2b(f"{name}\x00{unit_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE < fraction


def _pick(
    state: SpecState, fraction: float, unit_id: str | None, upstream_model: str | None, injection: InjectionMode
) -> Target:
    """A request that names no version gets `candidate` with the canary share, else production;
    a spec with nothing to serve by default serves no candidate either (the 404 says why)."""
    served = state.resolve(None)  # NotFound first: the canary runs beside a served version only
    if fraction > 0 and CANDIDATE in state.labels and in_canary(state.name, unit_id, fraction):
        return Target(state.resolve(CANDIDATE), upstream_model, injection, CANDIDATE)
    return Target(served, upstream_model, injection, PRODUCTION)


def version_label(snapshot: RegistrySnapshot, name: str | None, version: int | None) -> str:
    """A spec version as a metric label: its number while it is still served, else `other`."""
    if name is None or version is None:
        return "none"
    state = snapshot.specs.get(name)
    return str(version) if state is not None and version in state.served_versions() else "other"
