"""Discovery files: how one process on this host finds a model server another one already runs.

The proxy (`speclearn serve`) and `speclearn local-model` announce their model server once it is
healthy in DATA_DIR/local-models/MODEL.json, so the compiler reuses it instead of loading a
second copy of the weights (≈0.8 GB of RAM and the CPU both would share). The file is written
atomically and removed on a clean stop; after a crash it stays behind, so a reader trusts it only
while its pid is alive, `/health` answers 200 and `/v1/models` lists the model.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
from dataclasses import asdict, dataclass
from pathlib import Path

from .models import get_model
from .server import _direct, healthy

FORMAT = 1


@dataclass(frozen=True)
class Discovered:
    """One announced model server, as its discovery file describes it."""

    model: str  # a name of the model table (MODELS)
    sha256: str  # of the GGUF it serves
    root_url: str  # http://HOST:PORT (health: root_url + /health)
    base_url: str  # root_url + /v1, what OpenAI clients take
    pid: int  # the announcing process: it owns the server and removes the file on a clean stop
    owner: str  # who announced it, for log lines: "the proxy", "speclearn local-model"
    started_at: float  # unix time the server became healthy
    format: int = FORMAT


def discovery_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "local-models"


def discovery_path(data_dir: Path | str, model: str) -> Path:
    return discovery_dir(data_dir) / f"{model}.json"


class Announcement:
    """A discovery file this process wrote; `withdraw()` removes it if it is still ours."""

    def __init__(self, path: Path, entry: Discovered) -> None:
        self.path, self.entry = path, entry

    def withdraw(self) -> None:
        """Idempotent; leaves a file another process has written since alone."""
        if read(self.path.parent.parent, self.entry.model) == self.entry:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def announce(data_dir: Path | str, model: str, root_url: str, *, owner: str, pid: int | None = None) -> Announcement:
    """Write DATA_DIR/local-models/MODEL.json for a healthy server at `root_url`."""
    root = root_url.rstrip("/")
    entry = Discovered(
        model=model, sha256=get_model(model).sha256, root_url=root, base_url=root + "/v1",
        pid=os.getpid() if pid is None else pid, owner=owner, started_at=time.time(),
    )  # fmt: skip
    from ..registry.files import write_atomic  # temp + fsync + rename; not for the child's import

    path = discovery_path(data_dir, model)
    write_atomic(path, json.dumps(asdict(entry), indent=2).encode() + b"\n")
    return Announcement(path, entry)


def read(data_dir: Path | str, model: str) -> Discovered | None:
    """The announced entry for `model`, or None if there is none or it is unreadable."""
    try:
        raw = json.loads(discovery_path(data_dir, model).read_text())
        return Discovered(**raw)
    except (OSError, ValueError, TypeError):
        return None


def find_live(data_dir: Path | str, model: str, timeout: float = 2.0) -> tuple[Discovered | None, str]:
    """The announced server for `model` if it can be used now, else None and why not."""
    path, entry = discovery_path(data_dir, model), read(data_dir, model)
    if entry is None:
        return None, f"no discovery file {path}"
    if entry.model != model or entry.sha256 != get_model(model).sha256:
        return None, f"{path} announces another model ({entry.model}, {entry.sha256[:12]})"
    if not pid_alive(entry.pid):
        return None, f"{path} is stale: pid {entry.pid} is gone"
    if not healthy(entry.root_url, timeout=timeout):
        return None, f"{path} is stale: {entry.root_url}/health does not answer 200"
    if not serves_model(entry.root_url, model, timeout=timeout):
        return None, f"{path} is stale: {entry.base_url}/models does not list {model}"
    return entry, f"{entry.owner} (pid {entry.pid})"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def serves_model(root_url: str, model: str, timeout: float = 2.0) -> bool:
    """True if `GET /v1/models` lists `model` (llama.cpp lists its alias, the table name)."""
    try:
        with _direct.open(root_url + "/v1/models", timeout=timeout) as r:
            data = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return any(isinstance(m, dict) and m.get("id") == model for m in data.get("data") or [])
