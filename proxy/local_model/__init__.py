"""An embedded, real instruction-tuned model for trying speclearn without an API key.

No model hub is reachable from where speclearn is installed, so the weights ship inside registry
packages (`models`: the table). Those packages are unofficial re-uploads: we never import them,
we only read their data files, and we always verify the sha256 of the assembled GGUF before
serving it (`weights`).

The runtime is `xllamacpp`, which embeds llama.cpp's OpenAI-compatible HTTP server but has no
command line and serves from background threads until its process exits. So it runs in a child
process (`python -m proxy.local_model ...`, `server`) that `LocalModelSupervisor` starts,
health-checks, restarts and stops (`supervisor`); the child exits on its own when its parent
dies. A process that runs a model server announces it in a discovery file so others on the host
reuse it (`discovery`).

Everything is re-exported here: callers write `from proxy import local_model as lm; lm.X`.
Tests that replace a function patch it in the module that looks it up (e.g.
`proxy.local_model.weights.locate_chunks`), not here.
"""

from __future__ import annotations

from . import discovery
from .discovery import Announcement, Discovered, announce, discovery_path, find_live
from .errors import LocalModelError
from .models import DEFAULT_MODEL, FALLBACK_MODEL, JUDGE_MODEL, MODELS, Chunk, ModelSpec, fallback_hint, get_model
from .server import (
    DEFAULT_CTX,
    DEFAULT_PARALLEL,
    HEALTH_PATH,
    RUNTIME,
    check_port,
    child_command,
    default_threads,
    exit_with_parent,
    free_port,
    healthy,
    require_runtime,
    runtime_installed,
    serve_forever,
    start_server,
)
from .supervisor import CommandFactory, LocalModelSupervisor
from .weights import (
    DEFAULT_CACHE_DIR,
    _marker,  # noqa: F401 - the tests check the download marker through the package
    _marker_ok,  # noqa: F401
    assemble,
    ensure_model,
    locate_chunks,
    model_path,
    weights_installed,
)

__all__ = [
    "DEFAULT_CACHE_DIR", "DEFAULT_CTX", "DEFAULT_MODEL", "DEFAULT_PARALLEL", "FALLBACK_MODEL", "HEALTH_PATH",
    "JUDGE_MODEL", "MODELS", "RUNTIME", "Announcement", "Chunk", "CommandFactory", "Discovered",
    "LocalModelError", "LocalModelSupervisor", "ModelSpec", "announce", "assemble", "check_port",
    "child_command", "default_threads", "discovery", "discovery_path", "ensure_model", "exit_with_parent",
    "fallback_hint", "find_live", "free_port", "get_model", "healthy", "locate_chunks", "model_path",
    "require_runtime", "runtime_installed", "serve_forever", "start_server", "weights_installed",
]  # fmt: skip
