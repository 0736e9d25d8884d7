"""What a spec registry is, independent of where versions are stored.

The proxy reads only immutable snapshots, swapped whole on reload, so one request sees one
consistent registry; writers go through `publish` and `set_label`.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequest, NotFound

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LABEL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")
PRODUCTION = "production"
LATEST = "latest"
HELD, REJECTED, APPROVED = "held", "rejected", "approved"  # approval mode: a compiled version's hold
COMPILER = "compiler"  # the `author` of a version the compiler published


def person_default(labels: Iterable[str] | None, existing: Iterable[str], author: str) -> list[str]:
    """The labels a publish moves. `None` is a person's default: their first version (no
    `production` label yet) becomes `production`, a later one waits unlabelled; an explicit list,
    even empty, is taken as given. The compiler always names its labels."""
    if labels is not None:
        return list(labels)
    return [PRODUCTION] if author != COMPILER and PRODUCTION not in set(existing) else []


def held_for_a_person(meta: dict[str, Any] | None) -> bool:
    """A compiled version whose front matter says why only a person may release it (`held_for`):
    a proposal to change the person's own text, or a wish the defences would not publish alone.
    Held as in approval mode, whatever the mode."""
    return bool(meta and meta.get("held_for"))


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidRequest(f"invalid spec name {name!r}: use 1-64 letters, digits, '_', '-', '.'", param="spec")
    return name


def check_label(label: str) -> str:
    if not LABEL_RE.match(label) or label == LATEST or label.isdigit():
        raise InvalidRequest(f"invalid label {label!r}", param="label")
    return label


@dataclass(frozen=True, slots=True)
class SpecVersion:
    name: str
    version: int
    text: str
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class Hold:
    """A version published for approval: never served while `held` or `rejected`; on approval the
    label the compiler asked for moves onto it."""

    status: str  # held | approved | rejected
    label: str | None = None
    requested_at: str | None = None  # ISO 8601
    decided_at: str | None = None

    @property
    def blocks(self) -> bool:
        return self.status != APPROVED

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "label": self.label, "requested_at": self.requested_at,
                "decided_at": self.decided_at}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SpecState:
    name: str
    versions: dict[int, SpecVersion]
    labels: dict[str, int]
    instruction: str | None = None
    holds: dict[int, Hold] = field(default_factory=dict)

    def blocked(self, version: int) -> bool:
        """True for a version held for approval or rejected: never served."""
        hold = self.holds.get(version) if self.holds else None
        return hold is not None and hold.blocks

    @property
    def latest(self) -> SpecVersion | None:
        """The newest version that may be served."""
        if not self.holds:
            return self.versions[max(self.versions)] if self.versions else None
        servable = [v for v in self.versions if not self.blocked(v)]
        return self.versions[max(servable)] if servable else None

    @property
    def serving(self) -> SpecVersion | None:
        """The version a request that names none gets: `production`; without it, the newest version
        a person published that no label points to. Never a compiled version, a held one or one
        published under another label (`candidate`): those wait until a person promotes them,
        whether or not `production` exists. None when nothing qualifies."""
        number = self.labels.get(PRODUCTION)
        if number is not None:
            return self.versions.get(number)
        labelled = set(self.labels.values())
        mine = [
            v for v, spec in self.versions.items()
            if v not in labelled and spec.meta.get("author") != COMPILER and not self.blocked(v)
        ]  # fmt: skip
        return self.versions[max(mine)] if mine else None

    def resolve(self, ref: str | int | None, *, include_held: bool = False) -> SpecVersion:
        """`None` means the version served by default (`serving`); digits a version; `latest` the
        newest servable one; else a label. A held or rejected version is not found, unless
        `include_held` (to inspect it, not serve it)."""
        if include_held and ref is not None and (isinstance(ref, int) or ref.isdigit()):
            spec = self.versions.get(int(ref))
            if spec is None:
                raise NotFound(f"spec {self.name!r} has no version {ref!r}", param="spec", code="spec_not_found")
            return spec
        if ref is None:
            spec = self.serving
            if spec is None:
                raise NotFound(self._nothing_served(), param="spec", code="spec_not_found")
        elif isinstance(ref, int) or ref.isdigit():
            spec = self.versions.get(int(ref))
        elif ref == LATEST:
            spec = self.latest
        else:
            number = self.labels.get(ref)
            spec = self.versions.get(number) if number is not None else None
        if spec is None:
            raise NotFound(f"spec {self.name!r} has no version {ref!r}", param="spec", code="spec_not_found")
        if self.holds and self.blocked(spec.version):
            status = self.holds[spec.version].status
            raise NotFound(
                f"spec {self.name!r} version {spec.version} is {status} (approval mode): it is not served",
                param="spec", code="spec_not_found",
            )  # fmt: skip
        return spec

    def _nothing_served(self) -> str:
        """Why a request that names no version gets none, and the way out."""
        if not self.versions:
            return f"spec {self.name!r} has no version yet"
        return (
            f"spec {self.name!r} has no version to serve by default: no 'production' label, and every "
            f"version was compiled, is held or carries another label (such as 'candidate'); promote one "
            f"(speclearn specs label {self.name} production N) or name it ({self.name}@N)"
        )

    def served_versions(self) -> set[int]:
        """Versions worth their own metric label: labelled ones, the default and the latest."""
        served = set(self.labels.values())
        for spec in (self.serving, self.latest):
            if spec is not None:
                served.add(spec.version)
        return served


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    specs: dict[str, SpecState]
    generation: int = 0

    def get(self, name: str) -> SpecState:
        state = self.specs.get(name)
        if state is None:
            raise NotFound(f"unknown spec {name!r}", param="spec", code="spec_not_found")
        return state

    def resolve(self, name: str, ref: str | int | None = None) -> SpecVersion:
        return self.get(name).resolve(ref)


EMPTY = RegistrySnapshot({})


class Registry(abc.ABC):
    """Storage of spec versions and labels; `snapshot` is what request handlers read.

    Backends build a whole new snapshot on each change and hand it to `_swap`, which replaces
    the reference in one step and tells the listeners (metrics) about it.
    """

    snapshot: RegistrySnapshot = EMPTY
    listeners: list[Callable[[RegistrySnapshot], None]]

    def _swap(self, specs: dict[str, SpecState]) -> RegistrySnapshot:
        snapshot = RegistrySnapshot(specs, self.snapshot.generation + 1)
        self.snapshot = snapshot
        for listener in getattr(self, "listeners", ()):
            listener(snapshot)
        return snapshot

    async def start(self) -> None:
        """Load the first snapshot and start following changes."""
        await self.refresh()

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop following changes."""

    @abc.abstractmethod
    async def refresh(self) -> bool:
        """Reload now; True when the snapshot changed."""

    @abc.abstractmethod
    async def publish(
        self,
        name: str,
        text: str,
        *,
        meta: dict[str, Any] | None = None,
        author: str = "human",
        parent: int | None = None,
        labels: Iterable[str] | None = (),
    ) -> SpecVersion:
        """Store a new immutable version (number = last + 1) and move `labels` onto it; `None`:
        `production` when the spec has none yet (`person_default`), read as the version is stored
        (PostgreSQL: under the write lock, so two first publishes never both take it)."""

    @abc.abstractmethod
    async def set_label(self, name: str, label: str, version: int) -> None:
        """Point a label at an existing version (promotion and rollback)."""

    @abc.abstractmethod
    async def set_instruction(self, name: str, text: str) -> None:
        """Store the person-written instruction that the compiler must keep."""

    # -- approval mode -----------------------------------------------------------------------
    #: Approval mode: versions published by the compiler (author "compiler") are held, their
    #: labels kept for `approve`, instead of being served. Set by the compiler's context.
    hold_compiled: bool = False

    @abc.abstractmethod
    async def decide_hold(self, name: str, version: int, approve: bool) -> Hold:
        """Approve (apply the requested label) or reject a held version; NotFound for an unknown
        version, Conflict for one that is not awaiting approval."""
