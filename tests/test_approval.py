"""Approval mode: compiled versions are held, never served, until a person approves them
(`speclearn specs approve`, or the admin API); the decision log on the command line."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from compiler.publish import publish
from compiler.runner import Context
from compiler.settings import CompilerSettings
from helpers import REPO, FakeUpstream, start_proxy, write_spec
from proxy import routing
from proxy.ledger import DecisionRecord
from proxy.ledger.sqlite import SqliteLedger
from proxy.registry import FileRegistry, Hold, RegistrySnapshot, SpecState, SpecVersion
from proxy.settings import Settings

MESSAGES = [{"role": "user", "content": "hello"}]
ADMIN = {"Authorization": "Bearer admin-secret"}


def cli(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "proxy.cli", *args], env=env, cwd=REPO, capture_output=True, text=True)
    assert (done.returncode == 0) == ok, done.stderr
    return done


def hold(specs: Path, text: str, label: str) -> int:
    """Publish as the compiler does in approval mode."""
    registry = FileRegistry(specs, poll_interval=0)
    registry.hold_compiled = True
    return registry.publish_sync("default", text, author="compiler", labels=[label]).version


def test_held_versions_are_never_served_until_approved(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    write_spec(specs, "default", "PROD ONE")
    proxy = start_proxy(tmp_path, fake_upstream.url, specs_dir=specs,
                        env={"SPECLEARN_ADMIN_KEY": "admin-secret", "SPECLEARN_CANARY_FRACTION": "1"})  # fmt: skip
    url = proxy.base_url + "/chat/completions"
    admin = proxy.root_url + "/admin/specs/default/versions"

    def served(spec_header: str | None = None, user: str = "u1") -> httpx.Response:
        headers = {"X-Spec": spec_header} if spec_header else {}
        return httpx.post(url, json={"model": "m", "messages": MESSAGES, "user": user}, headers=headers)

    try:
        assert hold(specs, "HELD TWO", "production") == 2
        assert hold(specs, "HELD THREE", "candidate") == 3
        time.sleep(0.5)  # past a registry poll
        for header in (None, "default", "default@latest", "default@production"):
            r = served(header)
            assert r.status_code == 200 and r.headers["x-spec-version"] == "default@1", header
            assert "HELD" not in str(fake_upstream.last().body)
        for pinned in ("default@2", "default@3", "default@candidate"):  # no label points at a held one
            r = served(pinned)
            assert r.status_code == 404 and r.json()["error"]["code"] == "spec_not_found"
        assert "default@2 held (asks for production)" in cli(proxy.env, "specs", "list").stdout
        assert "HELD TWO" in cli(proxy.env, "specs", "show", "default@2").stdout  # a reviewer can read it

        # the admin API: the admin key, OpenAI-shaped errors for what does not exist
        assert httpx.post(f"{admin}/2/approve").status_code == 401
        missing = httpx.post(f"{admin}/99/approve", headers=ADMIN)
        assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}
        assert httpx.post(proxy.root_url + "/admin/specs/nope/versions/2/approve", headers=ADMIN).status_code == 404
        assert httpx.post(f"{admin}/1/approve", headers=ADMIN).status_code == 409  # not held
        got = httpx.get(f"{admin}/2", headers=ADMIN).json()
        assert got["text"] == "HELD TWO\n" and got["hold"]["status"] == "held"
        approved = httpx.post(f"{admin}/2/approve", headers=ADMIN)
        assert approved.status_code == 200, approved.text
        assert approved.json() | {"requested_at": None, "decided_at": None} == {
            "name": "default", "version": 2, "status": "approved", "label": "production",
            "requested_at": None, "decided_at": None,
        }  # fmt: skip
        assert httpx.post(f"{admin}/2/approve", headers=ADMIN).status_code == 409  # once
        rejected = httpx.post(f"{admin}/3/reject", headers=ADMIN)
        assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
        time.sleep(0.5)
        assert {served(user=f"u{i}").headers["x-spec-version"] for i in range(5)} == {"default@2"}
        assert served("default@3").status_code == 404
        cli(proxy.env, "specs", "label", "default", "candidate", "3", ok=False)  # a rejection is final

        # the command line, for the next one
        assert hold(specs, "HELD FOUR", "candidate") == 4
        assert (
            cli(proxy.env, "specs", "approve", "default", "4").stdout.strip() == "default@4: approved, candidate -> 4"
        )
        assert hold(specs, "HELD FIVE", "production") == 5
        assert cli(proxy.env, "specs", "reject", "default", "5").stdout.strip() == "default@5: rejected"
        assert "not awaiting approval" in cli(proxy.env, "specs", "approve", "default", "5", ok=False).stderr
        time.sleep(0.5)
        assert {served(user=f"u{i}").headers["x-spec-version"] for i in range(5)} == {"default@4"}  # canary 1.0
        assert served("default@production").headers["x-spec-version"] == "default@2"
        assert served("default@5").status_code == 404
    finally:
        proxy.stop()


def test_a_default_spec_with_only_held_versions_serves_no_spec() -> None:
    state = SpecState("default", {1: SpecVersion("default", 1, "held", "h")}, {}, None, {1: Hold("held", "production")})
    target = routing.resolve(RegistrySnapshot({"default": state}), Settings(), None, None, "m")
    assert target.spec is None and state.served_versions() == set()


def test_a_spec_whose_every_version_is_held_competes_with_its_instruction() -> None:
    """The compiler's round must not crash on it: nothing is served, so nothing is current."""
    from compiler.pipeline import served

    state = SpecState("s", {1: SpecVersion("s", 1, "held", "h")}, {}, None, {1: Hold("held", "candidate")})
    assert served(state) is None
    open_ = SpecState("s", {1: SpecVersion("s", 1, "ok", "h")}, {"production": 1}, None, {})
    assert served(open_) is not None and served(open_).version == 1
    assert served(None) is None


async def test_the_compiler_publishes_held_in_approval_mode(tmp_path: Path) -> None:
    registry = FileRegistry(tmp_path / "specs", poll_interval=0)
    await registry.publish("s", "v1", labels=["production"])
    settings = Settings(specs_dir=tmp_path / "specs", data_dir=tmp_path / "data")
    ctx = Context(settings, CompilerSettings(base_url="http://x/v1", require_approval=True), registry)
    first = await publish(ctx.registry, "s", "compiled", {"gate": {}}, parent=1, label="candidate")
    again = await publish(ctx.registry, "s", "compiled", {"gate": {}}, parent=1, label="candidate")
    assert first.version == again.version == 2  # the same text waits once, not twice
    state = registry.snapshot.get("s")
    assert state.labels == {"production": 1} and state.holds[2].status == "held"
    await registry.decide_hold("s", 2, approve=False)
    assert (await publish(ctx.registry, "s", "compiled", {}, parent=1, label="candidate")).version == 2
    assert registry.snapshot.get("s").labels == {"production": 1}  # rejected text stays rejected
    plain = FileRegistry(tmp_path / "other", poll_interval=0)
    Context(settings, CompilerSettings(base_url="http://x/v1"), plain)
    await publish(plain, "s", "compiled", {}, parent=None, label="candidate")
    assert plain.snapshot.get("s").labels == {"candidate": 1}  # without approval mode: labelled at once


@pytest.mark.parametrize("limit", [None, "1"])
async def test_experiments_command_prints_the_decision_log(tmp_path: Path, limit: str | None) -> None:
    ledger = SqliteLedger(tmp_path / "data" / "ledger.sqlite3")
    await ledger.start()
    await ledger.add_decision(DecisionRecord("s", 2, 1, "continue", "undecided", 1_800_000_000.0, 0.41, 0.012,
                                             30, 60, 29, 60))  # fmt: skip
    await ledger.add_decision(DecisionRecord("s", 2, 1, "rollback", "guardrail: tokens", 1_800_000_300.0,
                                             None, None, 0, 0, 0, 0))  # fmt: skip
    await ledger.close()
    env = {"PATH": "/usr/bin:/bin", "SPECLEARN_DATA_DIR": str(tmp_path / "data"),
           "SPECLEARN_SPECS_DIR": str(tmp_path / "specs")}  # fmt: skip
    out = cli(env, "specs", "experiments", "s", *(["--limit", limit] if limit else [])).stdout.splitlines()
    assert out[0].split()[:4] == ["time", "(UTC)", "cand", "prod"]
    rows = [line.split() for line in out[1:]]
    if limit:
        assert len(rows) == 1 and rows[0][4] == "rollback"
    else:
        assert rows[0][2:9] == ["2", "1", "continue", "30/60", "29/60", "+0.012", "0.4100"]
        assert rows[1][4:7] == ["rollback", "0/0", "0/0"] and out[2].endswith("guardrail: tokens")
    assert "no experiment decisions for t" in cli(env, "specs", "experiments", "t").stdout
