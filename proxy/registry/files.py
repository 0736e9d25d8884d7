"""The embedded registry: one folder per spec under `specs/`, plain files a person can read and diff.

specs/NAME/instruction.md, specs/NAME/versions/0001.md (immutable), specs/NAME/labels.json, and in
approval mode specs/NAME/holds.json ({"5": {"status": "held", "label": "candidate", "sha256": ...}}):
the hold lives beside the version, never in it, and binds only the body whose sha256 it names;
it changes under an flock on specs/NAME/.holds.lock, so a publish and an approval never lose
each other's entry.
Every write is temp file + fsync + rename (versions: link, so two publishers never share a number),
so a reader or a killed writer never sees half a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from ..errors import Conflict, NotFound
from . import specfile
from .base import (
    APPROVED,
    HELD,
    REJECTED,
    Hold,
    Registry,
    SpecState,
    SpecVersion,
    check_label,
    check_name,
    held_for_a_person,
    person_default,
)

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int, int, int, int], ...]
HOLDS = "holds.json"
HOLDS_LOCK = ".holds.lock"  # serializes read-modify-write of holds.json across processes


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _write_temp(folder: Path, data: bytes) -> str:
    """A complete, fsynced temp file in `folder`, ready to be renamed or linked into place."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".new.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` whole: readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(path.parent, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


class FileRegistry(Registry):
    def __init__(self, root: Path, poll_interval: float = 0.5) -> None:
        self.root = Path(root)
        self.poll_interval = poll_interval
        self.listeners = []
        self._signature: Signature | None = None
        self._parsed: dict[Path, tuple[int, SpecVersion | None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # -- reading -------------------------------------------------------------------------
    async def start(self) -> None:
        await self.refresh()
        if self.poll_interval > 0:
            self._watcher = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self._watcher:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.refresh()
            except Exception:  # a bad file must not stop hot reload for the others
                log.exception("spec registry reload failed")

    async def refresh(self) -> bool:
        async with self._lock:
            return await asyncio.to_thread(self._refresh_sync)

    def _spec_dirs(self) -> list[Path]:
        try:
            return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except FileNotFoundError:
            return []

    def _scan_signature(self, dirs: list[Path]) -> Signature:
        return tuple(
            (
                d.name,
                _mtime(d / "labels.json"),
                _mtime(d / "versions"),
                _mtime(d / "instruction.md"),
                _mtime(d / HOLDS),
                len(os.listdir(d / "versions")) if (d / "versions").is_dir() else 0,
            )
            for d in dirs
        )

    def _refresh_sync(self) -> bool:
        dirs = self._spec_dirs()
        signature = self._scan_signature(dirs)
        if signature == self._signature:
            return False
        specs = {d.name: self._load_spec(d) for d in dirs}
        self._swap(specs)
        self._signature = signature
        return True

    def _load_spec(self, folder: Path) -> SpecState:
        versions: dict[int, SpecVersion] = {}
        vdir = folder / "versions"
        if vdir.is_dir():
            for path in vdir.glob("[0-9]*.md"):
                spec = self._load_version(folder.name, path)
                if spec is not None:
                    versions[spec.version] = spec
        holds: dict[int, Hold] = {}
        entries = self._read_holds(folder)
        if entries is None:  # unreadable: keep the decisions last read, hold every other compiled version
            log.error("unreadable %s: keeping the last holds read; other compiled versions are held", folder / HOLDS)
            previous = self.snapshot.specs.get(folder.name)
            known = previous.holds if previous is not None else {}
            entries = {
                n: {"status": known[n].status if n in known else HELD, "sha256": v.sha256}
                for n, v in versions.items() if n in known or v.meta.get("author") == "compiler"
            }  # fmt: skip
        for number, entry in entries.items():
            spec = versions.get(number)
            if spec is not None and entry.get("sha256") == spec.sha256:
                holds[number] = Hold(entry["status"], entry.get("label"), entry.get("requested_at"),
                                     entry.get("decided_at"))  # fmt: skip
        labels: dict[str, int] = {}
        try:
            raw = orjson.loads((folder / "labels.json").read_bytes())
            labels = {
                k: int(v) for k, v in raw.items()
                if int(v) in versions and (int(v) not in holds or not holds[int(v)].blocks)
            }  # fmt: skip
        except FileNotFoundError:
            pass
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
            log.error("ignoring unreadable %s", folder / "labels.json")
        instruction_path = folder / "instruction.md"
        instruction = instruction_path.read_text("utf-8") if instruction_path.exists() else None
        return SpecState(folder.name, versions, labels, instruction, holds)

    @staticmethod
    def _read_holds(folder: Path) -> dict[int, dict[str, Any]] | None:
        """holds.json by version number; None when it is unreadable."""
        try:
            raw = orjson.loads((folder / HOLDS).read_bytes())
            return {int(k): dict(v) for k, v in raw.items() if v.get("status") in (HELD, APPROVED, REJECTED)}
        except FileNotFoundError:
            return {}
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
            return None

    @staticmethod
    @contextlib.contextmanager
    def _holds_locked(folder: Path) -> Iterator[None]:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / HOLDS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _holds_for_write(self, folder: Path) -> dict[int, dict[str, Any]]:
        holds = self._read_holds(folder)
        if holds is None:
            raise Conflict(f"{folder / HOLDS} is unreadable: repair it first", param="version")
        return holds

    def _write_holds(self, folder: Path, holds: dict[int, dict[str, Any]]) -> None:
        data = {str(k): v for k, v in sorted(holds.items())}
        write_atomic(folder / HOLDS, orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))

    def _load_version(self, name: str, path: Path) -> SpecVersion | None:
        """Parse once per file; versions are immutable, so a cached parse stays right."""
        mtime = _mtime(path)
        cached = self._parsed.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
        spec: SpecVersion | None = None
        try:
            meta, text = specfile.parse(path.read_text("utf-8"))
            number = int(path.stem)
            spec = SpecVersion(name, number, text, specfile.body_sha256(text), meta)
        except (specfile.SpecFileError, ValueError, UnicodeDecodeError) as exc:
            log.error("not serving %s: %s", path, exc)
        self._parsed[path] = (mtime, spec)
        return spec

    # -- writing -------------------------------------------------------------------------
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
        labels = None if labels is None else list(labels)
        spec = await asyncio.to_thread(self.publish_sync, name, text, meta, author, parent, labels)
        await self.refresh()
        return spec

    def publish_sync(
        self,
        name: str,
        text: str,
        meta: dict[str, Any] | None = None,
        author: str = "human",
        parent: int | None = None,
        labels: Iterable[str] | None = (),
    ) -> SpecVersion:
        check_name(name)
        labels = (
            list(labels) if labels is not None else person_default(None, self._read_labels(self.root / name), author)
        )
        for label in labels:
            check_label(label)
        text = text if text.endswith("\n") else text + "\n"
        vdir = self.root / name / "versions"
        vdir.mkdir(parents=True, exist_ok=True)
        existing = [int(p.stem) for p in vdir.glob("[0-9]*.md") if p.stem.isdigit()]
        number = max(existing, default=0) + 1
        if parent is None and existing:
            parent = max(existing)
        hold = author == "compiler" and (self.hold_compiled or held_for_a_person(meta))
        sha = specfile.body_sha256(text)
        folder = self.root / name
        with self._holds_locked(folder) if hold else contextlib.nullcontext():
            while True:
                if hold:  # the hold is on disk before the version is, so it is never served unheld
                    holds = self._holds_for_write(folder)
                    taken = [int(p.stem) for p in vdir.glob("[0-9]*.md") if p.stem.isdigit()]
                    number = max(number, max(taken, default=0) + 1)
                    while number in holds:  # another held publish's number (it may be about to link)
                        number += 1
                    mine = {"status": HELD, "label": labels[0] if labels else None, "sha256": sha,
                            "requested_at": _now(), "decided_at": None}  # fmt: skip
                    self._write_holds(folder, {**holds, number: mine})
                record = {
                    "version": number,
                    "parent": parent,
                    "sha256": sha,
                    "created_at": _now(),
                    "author": author,
                    **(meta or {}),
                }
                if self._link_new(vdir / f"{number:04d}.md", specfile.render(record, text).encode()):
                    break
                if hold:  # another publisher took this number first: take our hold off their version
                    holds = self._holds_for_write(folder)
                    if holds.get(number) == mine:
                        del holds[number]
                        self._write_holds(folder, holds)
                number += 1
        for label in labels if not hold else ():
            self._set_label_sync(name, label, number)
        return SpecVersion(name, number, text, record["sha256"], record)

    @staticmethod
    def _link_new(final: Path, data: bytes) -> bool:
        """Create `final` complete or not at all, failing if it already exists."""
        tmp = _write_temp(final.parent, data)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        _fsync_dir(final.parent)
        return True

    async def set_label(self, name: str, label: str, version: int) -> None:
        await asyncio.to_thread(self._set_label_sync, name, label, version)
        await self.refresh()

    def _set_label_sync(self, name: str, label: str, version: int) -> None:
        check_name(name)
        check_label(label)
        folder = self.root / name
        path = folder / "versions" / f"{version:04d}.md"
        if not path.exists():
            raise NotFound(f"spec {name!r} has no version {version}", param="version")
        entry = self._holds_for_write(folder).get(version)
        if entry is not None and entry["status"] != APPROVED:
            spec = self._load_version(name, path)
            if spec is None or entry.get("sha256") in (None, spec.sha256):
                raise Conflict(f"{name}@{version} is {entry['status']}: approve it first", param="version")
        labels_path = folder / "labels.json"
        try:
            labels = orjson.loads(labels_path.read_bytes())
        except FileNotFoundError:
            labels = {}
        labels[label] = version
        write_atomic(labels_path, orjson.dumps(labels, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))

    @staticmethod
    def _read_labels(folder: Path) -> dict[str, Any]:
        """labels.json as stored (empty when absent); a publish reads it to decide `production`."""
        try:
            raw = orjson.loads((folder / "labels.json").read_bytes())
        except FileNotFoundError:
            return {}
        except orjson.JSONDecodeError as exc:
            raise Conflict(f"{folder / 'labels.json'} is unreadable: repair it first", param="labels") from exc
        return raw if isinstance(raw, dict) else {}

    async def set_instruction(self, name: str, text: str) -> None:
        check_name(name)
        await asyncio.to_thread(write_atomic, self.root / name / "instruction.md", text.encode("utf-8"))
        await self.refresh()

    async def decide_hold(self, name: str, version: int, approve: bool) -> Hold:
        hold = await asyncio.to_thread(self._decide_hold_sync, name, version, approve)
        await self.refresh()
        return hold

    def _decide_hold_sync(self, name: str, version: int, approve: bool) -> Hold:
        check_name(name)
        folder = self.root / name
        path = folder / "versions" / f"{version:04d}.md"
        spec = self._load_version(name, path) if path.exists() else None
        if spec is None:
            raise NotFound(f"spec {name!r} has no version {version}", param="version", code="version_not_found")
        with self._holds_locked(folder):
            holds = self._holds_for_write(folder)
            entry = holds.get(version)
            if entry is None or entry.get("sha256") != spec.sha256 or entry["status"] != HELD:
                status = entry["status"] if entry else "not held"
                raise Conflict(f"{name}@{version} is not awaiting approval ({status})", param="version")
            entry.update(status=APPROVED if approve else REJECTED, decided_at=_now())
            self._write_holds(folder, holds)  # approved first, then the label: never a label on a held version
        if approve and entry.get("label"):
            self._set_label_sync(name, entry["label"], version)
        return Hold(entry["status"], entry.get("label"), entry.get("requested_at"), entry.get("decided_at"))
