"""The candidate label keeps its promise (issue 24, item 3).

A request that names no version gets `production`, else the newest version a person published
that no label points to; never a `candidate`, a version held for approval or one the compiler
wrote, whether or not `production` exists. A person's first version becomes `production` unless
they say otherwise: the admin API (`labels` omitted), `speclearn specs publish` (no `--label`) and
`speclearn compile --instruction` (a spec with no version) alike; `labels: []`, `--no-label` and
`--no-publish` are the ways to say otherwise.

The HTTP scenario runs through a real proxy process on the files registry and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import ICAI_ALIGNED, REPO, FakeUpstream, ProxyProcess, start_proxy
from proxy import routing
from proxy.errors import NotFound
from proxy.registry import FileRegistry, Hold, Registry, RegistrySnapshot, SpecState, SpecVersion
from proxy.settings import Settings
from test_storage import make_registry, pg_dsn, registry_store, run_async  # noqa: F401 - fixtures

ADMIN_KEY = "label-promise-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "hello"}]


# -- which version a request that names none gets ------------------------------------------------
def version(n: int, author: str = "human") -> SpecVersion:
    return SpecVersion("s", n, f"text {n}\n", f"sha{n}", {"version": n, "author": author})


def state(authors: dict[int, str], labels: dict[str, int], holds: dict[int, Hold] | None = None) -> SpecState:
    return SpecState("s", {n: version(n, a) for n, a in authors.items()}, labels, None, holds or {})


CASES = [
    # (versions by author, labels, holds, served by default; None = nothing)
    ({1: "human", 2: "human"}, {"production": 1, "candidate": 2}, None, 1),
    ({1: "human", 2: "human"}, {"candidate": 2}, None, 1),  # the issue: a person's candidate, no production
    ({1: "human", 2: "compiler"}, {}, None, 1),  # a compiled version with no label waits too
    ({1: "human", 2: "compiler"}, {"candidate": 2}, None, 1),
    ({1: "human", 2: "human", 3: "compiler"}, {}, None, 2),  # the newest version a person published
    ({1: "compiler"}, {"candidate": 1}, None, None),  # nothing a person published: nothing by default
    ({1: "compiler"}, {}, None, None),
    ({1: "human"}, {"candidate": 1}, None, None),  # a person's own candidate waits as well
    ({1: "human", 2: "compiler"}, {}, {2: Hold("approved", None)}, 1),  # approved without a label
    ({1: "human", 2: "human"}, {}, {2: Hold("held", "production")}, 1),  # held: never
    ({1: "human", 2: "compiler"}, {"production": 2}, None, 2),  # production is production, whoever wrote it
    ({}, {}, None, None),
]


@pytest.mark.parametrize(("authors", "labels", "holds", "want"), CASES)
def test_what_a_request_naming_no_version_gets(
    authors: dict[int, str], labels: dict[str, int], holds: dict[int, Hold] | None, want: int | None
) -> None:
    s = state(authors, labels, holds)
    assert (s.serving.version if s.serving else None) == want
    if want is None:
        with pytest.raises(NotFound) as caught:
            s.resolve(None)
        assert caught.value.code == "spec_not_found"
        if authors:  # the message says why and how to promote
            assert "speclearn specs label s production N" in caught.value.message
    else:
        assert s.resolve(None).version == want
        assert want in s.served_versions()
    if "candidate" in labels:  # named, the candidate stays reachable
        assert s.resolve("candidate").version == labels["candidate"]


def test_routing_never_falls_back_to_a_candidate() -> None:
    only_candidate = state({1: "compiler"}, {"candidate": 1})
    for fraction in (0.0, 1.0):
        settings = Settings(canary_fraction=fraction)
        # the default spec with nothing to serve by default: no spec, as if it had no version
        target = routing.resolve(RegistrySnapshot({"default": only_candidate}), settings, None, None, "m")
        assert target.spec is None
        # named: a 404, and the canary share gets no candidate either
        with pytest.raises(NotFound):
            routing.resolve(RegistrySnapshot({"s": only_candidate}), settings, "s", None, "m", "user-1")
    pinned = routing.resolve(RegistrySnapshot({"s": only_candidate}), Settings(), "s@candidate", None, "m")
    assert pinned.spec is not None and pinned.spec.version == 1  # a client may still ask for it by name
    person = state({1: "human", 2: "human"}, {"candidate": 2})
    for user in ("a", "b", "c", "d"):
        got = routing.resolve(RegistrySnapshot({"s": person}), Settings(), "s", None, "m", user)
        assert got.spec is not None and got.spec.version == 1 and got.arm == "production"


# -- a person's first version becomes production, on every backend -------------------------------
async def test_first_publish_by_a_person_becomes_production(make_registry: Any) -> None:
    reg: Registry = await make_registry()
    first = await reg.publish("s", "mine", labels=None)
    second = await reg.publish("s", "mine too", labels=None)
    assert reg.snapshot.get("s").labels == {"production": first.version}  # the second waits unlabelled
    assert reg.snapshot.resolve("s").version == first.version and second.version == 2

    optout = await reg.publish("quiet", "not yet", labels=[])  # an explicit empty list: no label
    assert reg.snapshot.get("quiet").labels == {} and optout.version == 1
    await reg.publish("quiet", "chosen", labels=["candidate"])
    assert reg.snapshot.get("quiet").labels == {"candidate": 2}
    assert reg.snapshot.resolve("quiet").version == 1  # a person's unlabelled version, not the candidate

    await reg.publish("bot", "compiled", author="compiler", labels=None)  # the compiler is not a person
    assert reg.snapshot.get("bot").labels == {}
    with pytest.raises(NotFound):
        reg.snapshot.resolve("bot")


async def test_concurrent_first_publishes_give_production_once(pg_dsn: str) -> None:
    """On PostgreSQL the choice is made under the write lock: the first committed version keeps
    `production`, every later one sees it and waits (the files registry, one writer per host,
    makes no such claim across processes)."""
    from proxy.registry.postgres import PostgresRegistry

    a, b = PostgresRegistry(pg_dsn, poll_interval=0), PostgresRegistry(pg_dsn, poll_interval=0)
    try:
        jobs = [reg.publish("race", f"t{i}", labels=None) for i in range(4) for reg in (a, b)]
        published = await asyncio.gather(*jobs)
        await a.refresh()
        assert a.snapshot.get("race").labels == {"production": 1}
        assert sorted(v.version for v in published) == list(range(1, 9))
    finally:
        await a.close()
        await b.close()


# -- the scenario of the issue, over HTTP through the proxy --------------------------------------
@pytest.fixture(params=["files", "postgres"])
def promise_proxy(
    request: pytest.FixtureRequest, fake_upstream: FakeUpstream, tmp_path: Path
) -> Iterator[ProxyProcess]:
    env = {"SPECLEARN_ADMIN_KEY": ADMIN_KEY}
    if request.param == "postgres":
        env["SPECLEARN_DATABASE_URL"] = request.getfixturevalue("pg_dsn")
    handle = start_proxy(tmp_path, fake_upstream.url, env=env, specs={})
    yield handle
    handle.stop()


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "proxy.cli", *args], env=env, cwd=REPO, input=stdin,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def ask(proxy: ProxyProcess, spec: str | None = None, user: str = "u") -> httpx.Response:
    headers = {"X-Spec": spec} if spec else {}
    body = {"model": "m", "messages": MESSAGES, "user": user}
    return httpx.post(proxy.base_url + "/chat/completions", json=body, headers=headers, timeout=10)


def publish_api(proxy: ProxyProcess, name: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{proxy.root_url}/admin/specs/{name}/versions", json=body, headers=ADMIN, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def eventually_served(proxy: ProxyProcess, spec: str, want: str) -> None:
    """Until the proxy has reloaded what the CLI wrote (a bound for failure, not a measurement)."""
    deadline = time.monotonic() + 10
    while (got := ask(proxy, spec).headers.get("x-spec-version")) != want:
        assert time.monotonic() < deadline, f"{spec} still serves {got}, not {want}"
        time.sleep(0.05)


def test_a_candidate_is_never_served_to_a_request_that_names_no_version(
    promise_proxy: ProxyProcess, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    proxy = promise_proxy
    # the steps: created through the admin API with no labels, then a candidate from the CLI
    first = publish_api(proxy, "support", {"text": "PERSON ONE"})
    assert first == {"name": "support", "version": 1, "sha256": first["sha256"], "labels": ["production"]}
    (tmp_path / "compiled.md").write_text("COMPILED TWO\n")
    out = cli(proxy.env, "specs", "publish", "support", str(tmp_path / "compiled.md"), "--label", "candidate")
    assert out.stdout.strip() == "published support@2 (candidate)"
    eventually_served(proxy, "support@candidate", "support@2")  # the proxy has it, by name
    for i in range(12):  # every user, every request: production
        r = ask(proxy, "support", user=f"user-{i}")
        assert r.status_code == 200 and r.headers["x-spec-version"] == "support@1"
        assert fake_upstream.last().body["messages"][0]["content"] == "PERSON ONE\n"
    path_form = httpx.post(f"{proxy.root_url}/specs/support/v1/chat/completions",
                           json={"model": "m", "messages": MESSAGES}, timeout=10)  # fmt: skip
    assert path_form.headers["x-spec-version"] == "support@1"
    # a later version through the API without labels waits: production stays
    assert publish_api(proxy, "support", {"text": "PERSON THREE"})["labels"] == []
    eventually_served(proxy, "support@3", "support@3")
    assert ask(proxy, "support").headers["x-spec-version"] == "support@1"
    # promotion is a person's act, and then it is served
    cli(proxy.env, "specs", "label", "support", "production", "2")
    eventually_served(proxy, "support", "support@2")

    # no production label at all (the API's opt-out): the person's version, still never the candidate
    assert publish_api(proxy, "default", {"text": "PERSON DEFAULT", "labels": []})["labels"] == []
    cli(proxy.env, "specs", "publish", "default", "-", "--label", "candidate", stdin="COMPILED DEFAULT\n")
    eventually_served(proxy, "default@candidate", "default@2")
    for i in range(6):
        r = ask(proxy, None, user=f"user-{i}")  # names nothing: the default spec
        assert r.headers["x-spec-version"] == "default@1"
        assert fake_upstream.last().body["messages"][0]["content"] == "PERSON DEFAULT\n"
    listed = httpx.get(f"{proxy.root_url}/admin/specs", headers=ADMIN, timeout=10).json()["data"]
    assert {s["name"]: s["labels"] for s in listed} == {
        "support": {"production": 2, "candidate": 2},
        "default": {"candidate": 2},
    }


def test_a_spec_with_only_compiled_versions_serves_nothing_by_default(
    promise_proxy: ProxyProcess, fake_upstream: FakeUpstream
) -> None:
    proxy = promise_proxy
    registry = _registry(proxy)

    async def compiled() -> None:
        try:
            await registry.refresh()
            await registry.publish("bot", "COMPILED ONLY", author="compiler", labels=["candidate"])
            await registry.publish("default", "COMPILED DEFAULT", author="compiler", labels=["candidate"])
        finally:
            await registry.close()

    run_async(compiled())
    eventually_served(proxy, "bot@candidate", "bot@1")
    r = ask(proxy, "bot")
    assert r.status_code == 404 and r.json()["error"]["code"] == "spec_not_found"
    assert "production" in r.json()["error"]["message"]
    eventually_served(proxy, "default@candidate", "default@1")
    r = ask(proxy, None)  # the default spec: as if it had no version, the request goes on without one
    assert r.status_code == 200 and r.headers["x-spec-version"] == "none"
    assert fake_upstream.last().body["messages"] == MESSAGES


def _registry(proxy: ProxyProcess) -> Registry:
    dsn = proxy.env.get("SPECLEARN_DATABASE_URL")
    if dsn:
        from proxy.registry.postgres import PostgresRegistry

        return PostgresRegistry(dsn, poll_interval=0)
    return FileRegistry(proxy.specs_dir, poll_interval=0)


# -- the command line -----------------------------------------------------------------------------
def snapshot_of(specs: Path) -> RegistrySnapshot:
    registry = FileRegistry(specs, poll_interval=0)
    run_async(registry.refresh())
    return registry.snapshot


def test_specs_publish_first_version_is_production_and_no_label_opts_out(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "SPECLEARN_SPECS_DIR": str(tmp_path / "specs"),
           "SPECLEARN_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    assert cli(env, "specs", "publish", "a", "-", stdin="A1").stdout.strip() == "published a@1 (production)"
    optout = cli(env, "specs", "publish", "b", "-", "--no-label", stdin="B1")
    assert optout.stdout.strip() == "published b@1 (no labels)"
    cli(env, "specs", "publish", "b", "-", "--label", "candidate", stdin="B2")
    snap = snapshot_of(tmp_path / "specs")
    assert snap.get("a").labels == {"production": 1}
    assert snap.get("b").labels == {"candidate": 2}
    assert snap.resolve("b").version == 1  # unlabelled and a person's: served while there is no production
    both = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "specs", "publish", "c", "-", "--no-label", "--label", "x"],
        env=env, cwd=REPO, input="C", capture_output=True, text=True,
    )  # fmt: skip
    assert both.returncode == 2 and "not allowed with" in both.stderr


# -- compile --instruction ------------------------------------------------------------------------
def compile_cli(tmp_path: Path, *args: str) -> int:
    from proxy.cli import main

    return main(["compile", *args, "--specs-dir", str(tmp_path / "specs"), "--data-dir", str(tmp_path / "data"),
                 "--seed", "5"])  # fmt: skip


def test_compile_instruction_publishes_it_as_the_production_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fake_llm import FakeLLM

    monkeypatch.setenv("SPECLEARN_COMPILER_MAX_LLM_CALLS", "500")
    fake = FakeLLM()
    with fake.serve() as base_url:
        common = ["--pairs", str(ICAI_ALIGNED), "--instruction", "You are a helpful assistant.", "--base-url", base_url]
        # --dry-run and --no-publish write no version: the person said not to publish
        assert compile_cli(tmp_path, "icai", *common, "--dry-run") == 0
        assert compile_cli(tmp_path, "icai", *common, "--no-publish") == 0
        assert snapshot_of(tmp_path / "specs").get("icai").versions == {}
        capsys.readouterr()
        # the round for real, with the compiler's default label
        code = compile_cli(tmp_path, "icai", *common)
    out = capsys.readouterr()
    assert code == 0 and "result: published" in out.out, out.err
    assert "published the instruction as icai@1 (production)" in out.err
    snap = snapshot_of(tmp_path / "specs")
    spec = snap.get("icai")
    assert spec.versions[1].text == "You are a helpful assistant.\n" and spec.versions[1].meta["author"] == "human"
    assert spec.versions[2].meta["author"] == "compiler" and spec.versions[2].meta["parent"] == 1
    assert spec.labels == {"production": 1, "candidate": 2}  # the compiled version waits as candidate
    assert snap.resolve("icai").version == 1


def test_compile_instruction_adds_no_version_to_a_spec_that_has_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With nothing to learn the round is skipped before any LLM call; the instruction's version
    is published only where the spec had none."""
    FileRegistry(tmp_path / "specs", poll_interval=0).publish_sync("old", "Existing words.", labels=["production"])
    dead = "http://127.0.0.1:9/v1"  # never called: the round is skipped for want of feedback
    assert compile_cli(tmp_path, "old", "--instruction", "New words.", "--base-url", dead, "--model", "m") == 0
    assert compile_cli(tmp_path, "new", "--instruction", "Be kind.", "--base-url", dead, "--model", "m") == 0
    out = capsys.readouterr()
    assert "published the instruction as new@1 (production)" in out.err and "old@" not in out.err
    snap = snapshot_of(tmp_path / "specs")
    assert sorted(snap.get("old").versions) == [1] and snap.resolve("old").text == "Existing words.\n"
    assert snap.get("new").labels == {"production": 1} and snap.resolve("new").text == "Be kind.\n"
