"""Which spec (and which upstream model) a request gets.

Precedence: the `X-Spec` header, then the path form `/specs/NAME/v1/...`, then a model alias
route's spec, then the spec named `default` at label production. A header or path that names an
unknown spec is an error, not a silent fallback: the client asked for something specific.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .registry import RegistrySnapshot, SpecState, SpecVersion
from .registry.base import check_name
from .settings import InjectionMode, Settings

NONE = "none"
CANDIDATE = "candidate"


@dataclass(frozen=True, slots=True)
class Target:
    spec: SpecVersion | None
    upstream_model: str | None  # the model to send upstream; None = leave the body's model
    injection: InjectionMode

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
) -> Target:
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
        return Target(_pick(state, ref, settings.canary_fraction), upstream_model, injection)

    default = snapshot.specs.get(settings.default_spec)
    spec = None
    if default is not None and default.versions:
        spec = _pick(default, None, settings.canary_fraction)
    return Target(spec, upstream_model, injection)


def _pick(state: SpecState, ref: str | None, canary_fraction: float) -> SpecVersion:
    """A request that names no version gets `candidate` with the canary share, else production."""
    if ref is None and canary_fraction > 0 and CANDIDATE in state.labels and random.random() < canary_fraction:
        return state.resolve(CANDIDATE)
    return state.resolve(ref)


def version_label(snapshot: RegistrySnapshot, name: str | None, version: int | None) -> str:
    """A spec version as a metric label: its number while it is still served, else `other`."""
    if name is None or version is None:
        return "none"
    state = snapshot.specs.get(name)
    return str(version) if state is not None and version in state.served_versions() else "other"
