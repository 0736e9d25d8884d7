"""What a spec registry is, independent of where versions are stored.

The proxy reads only immutable snapshots, swapped whole on reload, so one request sees one
consistent registry; writers go through `publish` and `set_label`.
"""
from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..errors import InvalidRequest, NotFound

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LABEL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")
PRODUCTION = "production"
LATEST = "latest"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidRequest(
            f"invalid spec name {name!r}: use 1-64 letters, digits, '_', '-', '.'", param="spec"
        )
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
class SpecState:
    name: str
    versions: dict[int, SpecVersion]
    labels: dict[str, int]
    instruction: str | None = None

    @property
    def latest(self) -> SpecVersion | None:
        return self.versions[max(self.versions)] if self.versions else None

    def resolve(self, ref: str | int | None) -> SpecVersion:
        """`None` means production, falling back to latest; digits a version; else a label."""
        if ref is None:
            number = self.labels.get(PRODUCTION)
            spec = self.versions.get(number) if number is not None else self.latest
        elif isinstance(ref, int) or ref.isdigit():
            spec = self.versions.get(int(ref))
        elif ref == LATEST:
            spec = self.latest
        else:
            number = self.labels.get(ref)
            spec = self.versions.get(number) if number is not None else None
        if spec is None:
            raise NotFound(f"spec {self.name!r} has no version {ref!r}", param="spec", code="spec_not_found")
        return spec

    def served_versions(self) -> set[int]:
        """Versions worth their own metric label: labelled ones and the latest."""
        served = set(self.labels.values())
        if self.versions:
            served.add(max(self.versions))
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
        labels: Iterable[str] = (),
    ) -> SpecVersion:
        """Store a new immutable version (number = last + 1) and move `labels` onto it."""

    @abc.abstractmethod
    async def set_label(self, name: str, label: str, version: int) -> None:
        """Point a label at an existing version (promotion and rollback)."""

    @abc.abstractmethod
    async def set_instruction(self, name: str, text: str) -> None:
        """Store the person-written instruction that the compiler must keep."""
