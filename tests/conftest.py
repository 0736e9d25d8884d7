from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import FakeUpstream, ProxyProcess, start_proxy
from proxy import local_model as lm

REAL_MODEL = os.environ.get("SPECLEARN_LOCAL_MODEL", lm.DEFAULT_MODEL)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_model: needs the embedded local model (the `local` extra)")


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def proxy(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """One proxy for a module's tests, with a `default` spec and a `support` spec and alias."""
    tmp: Path = tmp_path_factory.mktemp("proxy")
    handle = start_proxy(
        tmp,
        fake_upstream.url,
        specs={"default": "DEFAULT SPEC", "support": "SUPPORT SPEC"},
        env={"SPECLEARN_ROUTES": '{"support-bot": {"model": "fake-model", "spec": "support"}}'},
    )
    yield handle
    handle.stop()


def real_model_cache() -> Path:
    return Path(os.environ.get("SPECLEARN_MODEL_CACHE_DIR") or lm.DEFAULT_CACHE_DIR).expanduser()


def _missing_prerequisite() -> str | None:
    """Only a missing install is a reason to skip; a broken one (bad hash, crash) must fail."""
    if importlib.util.find_spec("xllamacpp") is None:
        return f"runtime {lm.RUNTIME} is not installed"
    spec = lm.get_model(REAL_MODEL)
    if lm._marker_ok(real_model_cache() / spec.filename, spec.sha256):
        return None  # already assembled and verified: the packages are not needed
    for c in spec.chunks:
        try:
            importlib.metadata.distribution(c.dist)
        except importlib.metadata.PackageNotFoundError:
            return f"weights package {c.dist}=={c.version} is not installed"
    return None


@pytest.fixture(scope="session")
def model() -> Iterator[lm.LocalModelSupervisor]:
    """One real model server for the whole session, shared by every real-model test file.

    Without the `local` extra the tests skip; CI sets SPECLEARN_REQUIRE_REAL_MODEL=1 so they fail
    instead of silently not running."""
    reason = _missing_prerequisite()
    if reason:
        if os.environ.get("SPECLEARN_REQUIRE_REAL_MODEL") == "1":
            pytest.fail(f"{reason} (SPECLEARN_REQUIRE_REAL_MODEL=1 demands the real model)", pytrace=False)
        pytest.skip(f"{reason}; install the `local` extra to run (CI: SPECLEARN_REQUIRE_REAL_MODEL=1)")
    sup = lm.LocalModelSupervisor(model=REAL_MODEL, cache_dir=real_model_cache())  # the shipped defaults
    sup.start(timeout=120)
    yield sup
    sup.stop()
