"""End to end with a real instruction-tuned model (Qwen2.5-Coder-0.5B on llama.cpp, CPU).

The official `openai` client talks first straight to the model, then through the proxy. Asserts
are on markers a system prompt controls (BANANA), never on facts: the 0.5B model gets facts wrong.
Temperature 0 with a fixed seed is deterministic for sequential requests (concurrent requests are
batched together and may differ), so requests here are sequential unless noted.

Without the `local` extra these tests skip; CI sets SPECLEARN_REQUIRE_REAL_MODEL=1 so they fail
instead of silently not running.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import REAL_MODEL as MODEL
from conftest import real_model_cache
from helpers import start_proxy
from proxy import local_model as lm

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(180)]

SEED = 1234
BANANA = "Begin every answer with the word BANANA."
PROMPTS = [
    "What is the capital of France?",
    "Name a primary color.",
    "How many legs does a spider have?",
    "Suggest a name for a cat.",
    "What is 2 + 2?",
    "Describe the sky in one sentence.",
    "Give me one tip for learning Python.",
    "What is a good breakfast?",
    "Translate 'hello' to Spanish.",
    "Why do leaves change color in autumn?",
]


def _client(base_url: str, **headers: str) -> Any:
    import openai

    return openai.OpenAI(
        base_url=base_url, api_key="sk-test", max_retries=0, timeout=60, default_headers=headers or None
    )


def _chat(client: Any, prompt: str, system: str | None = None, max_tokens: int = 24, **kw: Any) -> Any:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, seed=SEED, max_tokens=max_tokens, **kw
    )


def _banana_count(client: Any, system: str | None = None, **kw: Any) -> tuple[int, list[str]]:
    """Ask all PROMPTS (4 at a time: the server has 4 slots) and count BANANA openings."""

    def one(prompt: str) -> str:
        return _chat(client, prompt, system, max_tokens=6, **kw).choices[0].message.content or ""

    with cf.ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(one, PROMPTS))
    return sum(o.lstrip(" *\"'").upper().startswith("BANANA") for o in outs), outs


def _stream_text(stream: Any) -> tuple[str, Any, list[Any]]:
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks[-1].usage, chunks


# ------------------------------------------------------------------ straight to the model


def test_direct_chat_is_deterministic(model: lm.LocalModelSupervisor) -> None:
    client = _client(model.base_url)
    a = _chat(client, "Say hello to Ada in five words.")
    b = _chat(client, "Say hello to Ada in five words.")
    assert a.choices[0].message.content and a.choices[0].message.content == b.choices[0].message.content
    assert a.choices[0].finish_reason in ("stop", "length")
    assert a.usage.completion_tokens > 0 and a.usage.prompt_tokens > 0


def test_direct_stream_with_usage_matches_non_stream(model: lm.LocalModelSupervisor) -> None:
    client = _client(model.base_url)
    whole = _chat(client, "Name three colors.").choices[0].message.content
    text, usage, chunks = _stream_text(
        _chat(client, "Name three colors.", stream=True, stream_options={"include_usage": True})
    )
    assert text == whole
    assert chunks[-1].choices == [] and usage.completion_tokens > 0  # the usage-only chunk


def test_direct_system_prompt_is_followed(model: lm.LocalModelSupervisor) -> None:
    """The premise of every spec test below: this model obeys a system prompt."""
    client = _client(model.base_url)
    with_spec, outs = _banana_count(client, BANANA)
    without, outs_none = _banana_count(client)
    assert with_spec >= 8, outs
    assert without <= 1, outs_none


def test_direct_models(model: lm.LocalModelSupervisor) -> None:
    ids = [m.id for m in _client(model.base_url).models.list()]
    assert MODEL in ids


def test_direct_responses_api(model: lm.LocalModelSupervisor) -> None:
    r = _client(model.base_url).responses.create(
        model=MODEL, input="Name a fruit.", instructions=BANANA, max_output_tokens=16, temperature=0
    )
    assert r.status == "completed" and r.output_text
    assert r.output_text.upper().startswith("BANANA")
    assert r.usage.output_tokens > 0


# ------------------------------------------------------------------ through the proxy


@pytest.fixture(scope="session")
def real_proxy(model: lm.LocalModelSupervisor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """`speclearn serve` in front of the real model, with BANANA as `default`@production."""
    handle = start_proxy(tmp_path_factory.mktemp("real-proxy"), model.base_url, specs={"default": BANANA})
    try:
        _wait_for_spec(handle.base_url, "default@1")
        yield handle
    finally:
        handle.stop()


def _wait_for_spec(base_url: str, want: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        raw = _client(base_url).chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=1, temperature=0
        )
        got = raw.headers.get("x-spec-version")
        if got == want:
            return
        time.sleep(0.3)
    pytest.fail(f"the proxy serves spec {got!r}, expected {want!r}")


def test_proxy_chat_carries_ids_and_spec(real_proxy: Any) -> None:
    raw = _client(real_proxy.base_url).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a fruit."}],
        temperature=0, seed=SEED, max_tokens=16,
    )  # fmt: skip
    completion = raw.parse()
    assert raw.headers["x-inference-id"] == completion.id
    assert raw.headers["x-spec-version"] == "default@1"
    assert completion.choices[0].message.content
    assert completion.usage.completion_tokens > 0


def test_proxy_stream_with_usage(real_proxy: Any) -> None:
    raw = _client(real_proxy.base_url).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Name three colors."}],
        temperature=0, seed=SEED, max_tokens=24, stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    assert raw.headers["x-spec-version"] == "default@1"
    text, usage, chunks = _stream_text(raw.parse())
    assert text and usage is not None and usage.completion_tokens > 0
    assert chunks[-1].choices == []


def test_proxy_models(real_proxy: Any) -> None:
    assert MODEL in [m.id for m in _client(real_proxy.base_url).models.list()]


def test_proxy_responses_api_gets_the_spec(real_proxy: Any) -> None:
    raw = _client(real_proxy.base_url).responses.with_raw_response.create(
        model=MODEL, input="Name a fruit.", max_output_tokens=16, temperature=0
    )
    r = raw.parse()
    assert raw.headers["x-spec-version"] == "default@1"
    assert r.status == "completed" and r.output_text.upper().startswith("BANANA")


def test_proxy_spec_changes_behaviour(real_proxy: Any) -> None:
    """The product's promise in one test: the active spec steers a real model; opting out undoes it."""
    with_spec, outs = _banana_count(_client(real_proxy.base_url))
    opted_out, outs_none = _banana_count(_client(real_proxy.base_url, **{"X-Spec": "none"}))
    assert with_spec >= 8, outs
    assert opted_out <= 1, outs_none


def test_proxy_feedback_is_joined_in_export(real_proxy: Any) -> None:
    completion = _chat(_client(real_proxy.base_url), "Suggest a name for a dog.", max_tokens=12)
    r = httpx.post(
        real_proxy.base_url + "/feedback",
        json={"inference_id": completion.id, "value": "up"},
        headers={"Authorization": "Bearer sk-test"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["feedback_id"]

    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "feedback", "export"],
            env=real_proxy.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip().startswith("{")]
        mine = [row for row in rows if row.get("inference_id") == completion.id]
        if mine and mine[0].get("inference"):
            row = mine[0]
            assert row["value"] > 0 and row["kind"] == "thumb"
            assert row["inference"]["id"] == completion.id
            assert row["inference"]["response_text"] == completion.choices[0].message.content
            assert row["inference"]["spec_name"] == "default" and row["inference"]["spec_version"] == 1
            assert "BANANA" not in json.dumps(row["inference"]["request"])  # ledger keeps no spec
            return
        time.sleep(0.3)
    pytest.fail(f"feedback on {completion.id} not in `speclearn feedback export`: {rows[-3:]}")


def _local_model_command(data_dir: Path, *, sigint: Any = signal.SIG_DFL) -> subprocess.Popen[str]:
    """`sigint`: the disposition the command inherits; SIG_IGN is what a non-interactive shell
    gives a background job (and what this suite's children get when it runs as one)."""
    return subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "local-model", "--port", "0", "--parallel", "1",
         "--ctx", "2048", "--cache-dir", str(real_model_cache())],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "SPECLEARN_DATA_DIR": str(data_dir)},  # its discovery file goes there
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )  # fmt: skip


@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["terminal", "background-job"])
def test_local_model_command_serves_in_foreground(model: lm.LocalModelSupervisor, tmp_path: Path, sigint: Any) -> None:
    """`speclearn local-model --port 0`: prints only the base URL on stdout, announces it for
    the compiler (DATA_DIR/local-models/MODEL.json), stops on Ctrl-C and withdraws the file,
    also when started with SIGINT ignored."""
    proc = _local_model_command(tmp_path, sigint=sigint)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert MODEL in [m.id for m in _client(url).models.list()]
        entry, why = lm.find_live(tmp_path, MODEL)
        assert entry is not None and (entry.base_url, entry.pid) == (url, proc.pid), why
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert not lm.discovery_path(tmp_path, MODEL).exists()
    finally:
        proc.kill()
        proc.wait()


def test_local_model_command_ctrl_c_while_loading(model: lm.LocalModelSupervisor, tmp_path: Path) -> None:
    """Interrupted inside xllamacpp's constructor, the server's destructor hangs; we must not."""
    proc = _local_model_command(tmp_path)
    try:
        time.sleep(1.0)  # imports done, model loading
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.wait()
