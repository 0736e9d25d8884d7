from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from helpers import FakeUpstream, ProxyProcess, start_proxy


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
