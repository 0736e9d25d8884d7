"""Discovery with the real model: `speclearn serve` (no upstream) announces the model it starts,
`speclearn compile` with no configuration reuses it, and clean stops remove the file.

Skips without the `local` extra unless SPECLEARN_REQUIRE_REAL_MODEL=1 (then it fails instead).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REAL_MODEL as MODEL
from conftest import _missing_prerequisite, real_model_cache
from helpers import ICAI_ALIGNED, REPO, free_port
from proxy import local_model as lm
from proxy.config import write_tuning

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(300)]


@pytest.fixture(autouse=True)
def prerequisites() -> None:
    reason = _missing_prerequisite()
    if reason and os.environ.get("SPECLEARN_REQUIRE_REAL_MODEL") == "1":
        pytest.fail(f"{reason} (SPECLEARN_REQUIRE_REAL_MODEL=1 demands the real model)", pytrace=False)
    if reason:
        pytest.skip(reason)


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECLEARN_")}  # no upstream, no judge
    env.update(SPECLEARN_DATA_DIR=str(tmp_path / "data"), SPECLEARN_SPECS_DIR=str(tmp_path / "specs"),
               SPECLEARN_MODEL_CACHE_DIR=str(real_model_cache()), SPECLEARN_LOCAL_MODEL=MODEL)  # fmt: skip
    # a small model server, and a compiler that gives up on a call sooner than its 120 s
    tmp_path.mkdir(parents=True, exist_ok=True)
    env.update(write_tuning(tmp_path / "tuning.toml", proxy={"local_model_ctx": 4096, "local_model_parallel": 2},
                            compiler={"timeout": 90}))  # fmt: skip
    return env


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"exited with {proc.returncode} before announcing its model"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def test_serve_announces_its_model_and_compile_reuses_it(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    data = tmp_path / "data"
    path = lm.discovery_path(data, MODEL)
    log = (tmp_path / "serve.log").open("wb")
    proxy = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", "--port", str(free_port())], env=env,
                             cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_for_file(path, proxy)
        entry, why = lm.find_live(data, MODEL)
        assert entry is not None, why
        assert (entry.pid, entry.owner, entry.sha256) == (proxy.pid, "the proxy", lm.MODELS[MODEL].sha256)

        # the judge named as the same table model: it shares the proxy's server too
        compile_env = {**env, "SPECLEARN_COMPILER_JUDGE_MODEL": MODEL}
        done = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "compile", "icai", "--pairs", str(ICAI_ALIGNED), "--json",
             "--max-calls", "6", "--passes", "1", "--no-cache", "--instruction", "You are a helpful assistant."],
            env=compile_env, cwd=REPO, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert (
            f"compiler LLM: embedded {MODEL} served by the proxy (pid {proxy.pid}) at {entry.base_url}" in done.stderr
        )
        assert f"judge: embedded {MODEL}, the same server at {entry.base_url}" in done.stderr
        assert "started the embedded" not in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert json.loads(done.stdout)["cost"]["llm_calls"] > 0  # the proxy's model answered
    finally:
        proxy.send_signal(signal.SIGINT)
        try:
            proxy.wait(30)
        finally:
            proxy.kill()
            proxy.wait()
            log.close()
    assert proxy.returncode == 0 and not path.exists(), (tmp_path / "serve.log").read_text()[-2000:]


def test_local_model_command_withdraws_on_sigterm(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    path = lm.discovery_path(tmp_path / "data", MODEL)
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "local-model", "--port", "0", "--parallel", "1"],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        entry, why = lm.find_live(tmp_path / "data", MODEL)
        assert entry is not None and (entry.base_url, entry.pid, entry.owner) == (
            url,
            proc.pid,
            "speclearn local-model",
        ), why
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert not path.exists()
    finally:
        proc.kill()
        proc.wait()
