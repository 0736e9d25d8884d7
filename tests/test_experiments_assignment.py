"""Sticky canary assignment: by user, else session, else request; recorded on the ledger row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from helpers import REPO, FakeUpstream, start_proxy, write_spec
from ledger_reader import inference_row
from proxy import routing
from proxy.config import write_tuning
from proxy.registry import RegistrySnapshot, SpecState, SpecVersion
from proxy.settings import Settings

MESSAGES = [{"role": "user", "content": "hello"}]


def snapshot(labels: dict[str, int]) -> RegistrySnapshot:
    versions = {v: SpecVersion("default", v, f"text {v}", "h") for v in (1, 2)}
    return RegistrySnapshot({"default": SpecState("default", versions, labels)})


CANARY = snapshot({"production": 1, "candidate": 2})


def arm(
    unit_id: str | None, fraction: float = 0.3, snap: RegistrySnapshot = CANARY, header: str | None = None
) -> str | None:
    target = routing.resolve(snap, Settings(canary_fraction=fraction), header, None, "m", unit_id)
    assert target.spec is not None
    if target.arm is not None:  # the arm names the version served
        assert target.spec.version == (2 if target.arm == "candidate" else 1)
    return target.arm


def test_one_user_keeps_one_arm_and_users_split_by_the_share() -> None:
    for user in ("alice", "bob", "carol", "dave", "u-17"):
        assert len({arm(user) for _ in range(200)}) == 1
    share = sum(arm(f"user-{i}") == "candidate" for i in range(4000)) / 4000
    assert 0.27 < share < 0.33  # 0.3 expected; binomial sd 0.007
    # the split is per spec: the same users are not the canary of every spec
    assert any(
        routing.in_canary("default", f"u{i}", 0.5) != routing.in_canary("other", f"u{i}", 0.5) for i in range(50)
    )


def test_without_a_unit_each_request_is_drawn_and_pins_bypass_the_split() -> None:
    assert {arm(None, 0.5) for _ in range(200)} == {"candidate", "production"}
    assert {arm("alice", 0.0) for _ in range(20)} == {"production"}
    assert {arm("alice", 1.0) for _ in range(20)} == {"candidate"}
    assert arm("alice", 1.0, snapshot({"production": 1})) == "production"  # no candidate label
    assert arm("alice", 1.0, header="default@production") is None  # the client chose: no arm
    assert arm("alice", 1.0, header="default@2") is None
    assert arm("alice", 1.0, header="default") == "candidate"  # a name alone is split


def _ids_in_arms() -> tuple[str, str]:
    """A unit id in the canary (fraction 0.5) and one outside it."""
    inside = next(f"in-{i}" for i in range(1000) if routing.in_canary("default", f"in-{i}", 0.5))
    outside = next(f"out-{i}" for i in range(1000) if not routing.in_canary("default", f"out-{i}", 0.5))
    return inside, outside


def test_the_proxy_assigns_by_user_then_session_and_records_it(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    write_spec(specs, "default", "PROD")
    write_spec(specs, "default", "CANDIDATE", labels=("candidate",))
    proxy = start_proxy(tmp_path, fake_upstream.url, specs_dir=specs, env={"SPECLEARN_CANARY_FRACTION": "0.5"})
    inside, outside = _ids_in_arms()
    url = proxy.base_url + "/chat/completions"

    def send(body_user: str | None = None, **headers: str) -> httpx.Response:
        body = {"model": "m", "messages": MESSAGES, **({"user": body_user} if body_user else {})}
        return httpx.post(url, json=body, headers=headers)

    try:
        # a conversation (session) keeps its version across its turns
        turns = [send(**{"X-Session-Id": inside}).headers["x-spec-version"] for _ in range(8)]
        assert set(turns) == {"default@2"}
        assert {send(**{"X-Session-Id": outside}).headers["x-spec-version"] for _ in range(8)} == {"default@1"}
        # precedence: the body's user, then X-User-Id, then X-Session-Id
        by_user = send(outside, **{"X-User-Id": inside, "X-Session-Id": inside})
        assert by_user.headers["x-spec-version"] == "default@1"
        by_header = send(**{"X-User-Id": inside, "X-Session-Id": outside})
        assert by_header.headers["x-spec-version"] == "default@2"
        anonymous = send()
        pinned = httpx.post(url, json={"model": "m", "messages": MESSAGES}, headers={"X-Spec": "default@1"})

        rows = {
            name: inference_row(proxy.data_dir, r.headers["x-inference-id"])
            for name, r in [("user", by_user), ("header", by_header), ("anon", anonymous), ("pinned", pinned)]
        }
        assert (rows["user"]["assignment_unit"], rows["user"]["arm"]) == ("user", "production")
        assert (rows["header"]["assignment_unit"], rows["header"]["arm"]) == ("user", "candidate")
        assert json.loads(rows["header"]["metadata"]) == {"user": inside, "session": outside}
        assert rows["anon"]["assignment_unit"] == "request" and rows["anon"]["arm"] in ("candidate", "production")
        assert rows["pinned"]["arm"] is None
        session_row = inference_row(proxy.data_dir, send(**{"X-Session-Id": inside}).headers["x-inference-id"])
        assert (session_row["assignment_unit"], session_row["arm"]) == ("session", "candidate")

        fb = httpx.post(
            proxy.base_url + "/feedback", json={"inference_id": by_header.headers["x-inference-id"], "value": "up"}
        )
        assert fb.status_code == 200, fb.text
        done = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "feedback", "export"], env=proxy.env, cwd=REPO,
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        [event] = [json.loads(line) for line in done.stdout.splitlines()]
        assert (event["inference"]["assignment_unit"], event["inference"]["arm"]) == ("user", "candidate")
    finally:
        proxy.stop()


def test_sticky_canary_to_promotion_end_to_end(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    """Users through the real proxy, their thumbs, then one pass of the real sidecar with
    --auto-promote: the arms the proxy recorded are what the decision counts."""
    specs = tmp_path / "specs"
    write_spec(specs, "default", "PROD")
    write_spec(specs, "default", "CANDIDATE", labels=("candidate",))
    proxy = start_proxy(tmp_path, fake_upstream.url, specs_dir=specs, env={"SPECLEARN_CANARY_FRACTION": "0.5"})
    served: dict[str, int] = {"default@1": 0, "default@2": 0}
    ups: dict[str, int] = {"default@1": 0, "default@2": 0}
    try:
        with httpx.Client() as client:
            for i in range(240):
                r = client.post(proxy.base_url + "/chat/completions",
                                json={"model": "m", "messages": MESSAGES, "user": f"user-{i}"})  # fmt: skip
                version = r.headers["x-spec-version"]
                k = served[version] = served[version] + 1
                up = k % 5 != 0 if version == "default@2" else k % 5 < 2  # 80% vs 40% thumbs up
                ups[version] += up
                fb = client.post(
                    proxy.base_url + "/feedback",
                    json={"inference_id": r.headers["x-inference-id"], "value": "up" if up else "down"},
                )
                assert fb.status_code == 200, fb.text
    finally:
        proxy.stop()
    assert min(served.values()) >= 80  # the hash split the users
    tuning = write_tuning(tmp_path / "compiler-tuning.toml", compiler={"guardrail_min_requests": 50})
    env = {**proxy.env, **tuning, "SPECLEARN_COMPILER_BASE_URL": "http://127.0.0.1:9/v1"}
    subprocess.run([sys.executable, "-m", "proxy.cli", "compiler", "--once", "--auto-promote", "--metrics-port", "0",
                    "--min-feedback", "100000"], env=env, cwd=REPO, check=True, capture_output=True, timeout=60)  # fmt: skip
    log = subprocess.run([sys.executable, "-m", "proxy.cli", "specs", "experiments", "default"], env=env, cwd=REPO,
                         check=True, capture_output=True, text=True).stdout.splitlines()  # fmt: skip
    [row] = [line.split() for line in log[1:]]
    cand, prod = (f"{ups[v]}/{served[v]}" for v in ("default@2", "default@1"))
    assert row[2:7] == ["2", "1", "promote", cand, prod]
    labels = json.loads((specs / "default" / "labels.json").read_text())
    assert labels == {"production": 2, "candidate": 2}
