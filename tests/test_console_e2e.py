"""The console and the feedback snippet as a person uses them: Debian's Chromium (headless,
driven by playwright-core from tests/browser/) against a real `speclearn serve` with a fake
upstream, a registry with real versions and a ledger with real thumbs.

Screenshots go to a temporary folder, or to SPECLEARN_SCREENSHOTS (docs/console/ holds the
committed ones). Without Chromium or the npm package the test skips, except in CI, where
scripts/ci-tools.sh installs both and a missing one fails the run."""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from console_fixtures import ADMIN_KEY, SECRET, V2_TEXT, publish_versions
from helpers import REPO, FakeUpstream, free_port, start_proxy, write_spec
from ledger_reader import feedback_rows, inference_row
from proxy.console.session import Sessions
from proxy.ledger import THUMB, FeedbackRecord, InferenceRecord
from proxy.ledger.sqlite import SqliteLedger

BROWSER_DIR = REPO / "tests" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CLIENT_KEY, FEEDBACK_KEY = "sk-e2e", "pk-e2e"
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return "Debian's chromium is not installed (apt-get install chromium)"
    if shutil.which("node") is None:
        return "node is not installed"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed (npm ci in tests/browser)"
    return None


@pytest.fixture(scope="module")
def browser_ready() -> None:
    reason = _missing()
    if reason:
        if IN_CI:
            pytest.fail(f"{reason}: scripts/ci-tools.sh installs it", pytrace=False)
        pytest.skip(reason)


def _static_site(folder: Path) -> Iterator[str]:
    """A second web server for the example page: another origin than the proxy's."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture
def app_origin() -> Iterator[str]:
    yield from _static_site(REPO / "examples")


@pytest.fixture
def evil_origin() -> Iterator[str]:
    yield from _static_site(REPO / "examples")


async def _seed_thumbs(data_dir: Path) -> None:
    """A week of thumbs on v1 and a few days on v2, so the plot has history to show."""
    ledger = SqliteLedger(data_dir / "ledger.sqlite3", flush_interval=0)
    await ledger.start()
    now = time.time()
    rows, thumbs = [], []
    for day in range(8):
        for version, ups, total in ((1, 3 + day % 3, 9), (2, 7, 9)):
            if version == 2 and day < 4:
                continue
            for k in range(total):
                at = now - (8 - day) * 86400 + k * 600
                rows.append(
                    InferenceRecord(
                        f"seed-{version}-{day}-{k}",
                        at,
                        "chat",
                        "fake-model",
                        "support",
                        version,
                        "ab" * 32,
                        {"messages": []},
                    )
                )
                thumbs.append(
                    FeedbackRecord(f"seedfb-{version}-{day}-{k}", rows[-1].id, THUMB, 1.0 if k < ups else -1.0, at + 5)
                )
    await ledger._write_inferences(rows)
    for fb in thumbs:
        await ledger.add_feedback(fb)
    await ledger.close()


def chat_id(root_url: str) -> str:
    r = httpx.post(root_url + "/v1/chat/completions", json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]},
                   headers={"authorization": f"Bearer {CLIENT_KEY}", "x-spec": "support"})  # fmt: skip
    assert r.status_code == 200, r.text
    return r.headers["x-inference-id"]


@pytest.mark.timeout(240)
def test_console_and_snippet_in_chromium(
    browser_ready: None, fake_upstream: FakeUpstream, tmp_path: Path, app_origin: str, evil_origin: str
) -> None:
    publish_versions(tmp_path / "specs")
    write_spec(tmp_path / "specs", "default", "You are a helpful assistant. Answer clearly and concisely.")
    asyncio.run(_seed_thumbs(tmp_path / "data"))
    proxy = start_proxy(tmp_path, fake_upstream.url, env={
        "SPECLEARN_ADMIN_KEY": ADMIN_KEY, "SPECLEARN_CONSOLE_SECRET": SECRET, "SPECLEARN_API_KEYS": CLIENT_KEY,
        "SPECLEARN_FEEDBACK_KEYS": FEEDBACK_KEY, "SPECLEARN_CORS_ORIGINS": app_origin,
    })  # fmt: skip
    try:
        ids = {"allowed": chat_id(proxy.root_url), "evil": chat_id(proxy.root_url), "wrongKey": chat_id(proxy.root_url)}
        for inference_id in ids.values():
            inference_row(proxy.data_dir, inference_id)
        expired, _ = Sessions(ADMIN_KEY, SECRET, lifetime=3600, clock=lambda: time.time() - 7200).issue()
        screenshots = Path(os.environ.get("SPECLEARN_SCREENSHOTS") or tmp_path / "screenshots")
        config = {
            "proxy": proxy.root_url, "chromium": CHROMIUM, "adminKey": ADMIN_KEY, "clientKey": CLIENT_KEY,
            "feedbackKey": FEEDBACK_KEY, "appOrigin": app_origin, "evilOrigin": evil_origin, "inferenceIds": ids,
            "expiredCookie": expired, "screenshots": str(screenshots.resolve()),
        }  # fmt: skip
        result_path = tmp_path / "e2e.json"
        run = subprocess.run(
            ["node", "console.e2e.mjs"], cwd=BROWSER_DIR, capture_output=True, text=True, timeout=200,
            env={**os.environ, "E2E_CONFIG": json.dumps(config), "E2E_RESULT": str(result_path)},
        )  # fmt: skip
        seen = json.loads(result_path.read_text()) if result_path.exists() else {}
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\nseen: {seen}\nproxy log:\n{proxy.log()[-3000:]}"

        assert seen["before"] == "support@1" and seen["afterPromote"] == "support@2"
        assert seen["afterForged"] == "support@2"  # the forged rollback changed nothing
        assert seen["inserted"] == ["Answer in at most 25 words."]
        assert seen["principles"] == ["Answer in at most 25 words.", "Be friendly."]
        assert seen["quotes"] == ["way too long", "just give me the short answer"]
        assert seen["tokens"].startswith(f"≈ {round(len(V2_TEXT) / 4)}") and "estimate" in seen["tokens"]
        assert seen["plotPoints"] >= 8
        assert seen["foreignRequests"] == [] and seen["policyViolations"] == []
        assert "Failed to fetch" in seen["evilError"] or "NetworkError" in seen["evilError"]

        rows = {r["inference_id"]: r for r in feedback_rows(proxy.data_dir)}
        assert rows[ids["allowed"]]["value"] == 1.0 and rows[ids["allowed"]]["id"] == seen["feedbackId"]
        assert ids["evil"] not in rows and ids["wrongKey"] not in rows
        labels = json.loads((proxy.specs_dir / "support" / "labels.json").read_text())
        assert labels["production"] == 2
        assert len(seen["screenshots"]) == 11
    finally:
        proxy.stop()
