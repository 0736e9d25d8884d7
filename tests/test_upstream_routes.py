"""Several upstreams: routes to two fake upstreams with their own keys and model names, the old
route shape, /v1/models, and the start-up check of the configuration (one line per mistake)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from helpers import REPO, FakeUpstream, ProxyProcess, start_proxy
from ledger_reader import inference_row

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def second_upstream() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def proxy(
    fake_upstream: FakeUpstream, second_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    tmp = tmp_path_factory.mktemp("routes")
    key_file = tmp / "beta.key"
    key_file.write_text("key-beta\n")
    routes = {
        "alpha": {
            "spec": "support",
            "injection": "append",
            "upstreams": [{"url": fake_upstream.url, "api_key_env": "TEST_ALPHA_KEY", "model": "model-alpha"}],
        },
        "beta": {
            "upstreams": [{"url": second_upstream.url + "/", "api_key_file": str(key_file), "model": "model-beta"}]
        },
        "legacy": {"model": "fake-model", "spec": "support"},
    }
    handle = start_proxy(
        tmp, fake_upstream.url, specs={"default": "DEFAULT SPEC", "support": "SUPPORT SPEC"},
        env={"SPECLEARN_ROUTES": orjson.dumps(routes).decode(), "TEST_ALPHA_KEY": "key-alpha"},
    )  # fmt: skip
    yield handle
    handle.stop()


def post(
    proxy: ProxyProcess, model: str, key: str = "client-key", messages: list[dict[str, str]] = MESSAGES
) -> httpx.Response:
    return httpx.post(
        proxy.base_url + "/chat/completions",
        json={"model": model, "messages": messages},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_route_sends_its_model_and_key_to_its_upstream(
    proxy: ProxyProcess, fake_upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    before = len(second_upstream.received)
    r = post(proxy, "beta")
    assert r.status_code == 200
    assert len(second_upstream.received) == before + 1
    seen = second_upstream.last()
    assert seen.body["model"] == "model-beta"
    assert seen.headers["Authorization"] == "Bearer key-beta"  # the route's key, never the client's
    row = inference_row(proxy.data_dir, r.headers["x-inference-id"])
    assert row["upstream"] == second_upstream.url
    assert orjson.loads(row["request"])["model"] == "beta"  # the client's name, as it asked

    own = {"role": "system", "content": "be brief"}
    r = post(proxy, "alpha", messages=[own, *MESSAGES])
    seen = fake_upstream.last()
    assert (seen.body["model"], seen.headers["Authorization"]) == ("model-alpha", "Bearer key-alpha")
    # the route's spec, with the route's injection mode (append: after the client's own system message)
    assert seen.body["messages"] == [own, {"role": "system", "content": "SUPPORT SPEC\n"}, *MESSAGES]
    assert inference_row(proxy.data_dir, r.headers["x-inference-id"])["upstream"] == fake_upstream.url


def test_old_route_shape_and_unrouted_models_use_the_default_upstream(
    proxy: ProxyProcess, fake_upstream: FakeUpstream
) -> None:
    r = post(proxy, "legacy")
    seen = fake_upstream.last()
    assert seen.body["model"] == "fake-model"
    assert seen.headers["Authorization"] == "Bearer client-key"  # no proxy keys, no upstream key: forwarded
    assert seen.body["messages"][0] == {"role": "system", "content": "SUPPORT SPEC\n"}
    assert inference_row(proxy.data_dir, r.headers["x-inference-id"])["upstream"] == fake_upstream.url

    r = post(proxy, "anything-else")
    assert fake_upstream.last().body["model"] == "anything-else"
    assert inference_row(proxy.data_dir, r.headers["x-inference-id"])["upstream"] == fake_upstream.url


def test_openai_client_through_a_route(proxy: ProxyProcess, second_upstream: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=proxy.base_url, api_key="client-key", max_retries=0)
    answer = client.chat.completions.create(model="beta", messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "system=DEFAULT SPEC\n"
    assert second_upstream.last().body["model"] == "model-beta"


def test_models_lists_every_route(proxy: ProxyProcess) -> None:
    client = openai.OpenAI(base_url=proxy.base_url, api_key="client-key", max_retries=0)
    listed = {m.id: m for m in client.models.list()}
    assert {"fake-model", "alpha", "beta", "legacy"} <= set(listed)
    roots = {name: getattr(listed[name], "root", None) for name in ("alpha", "beta", "legacy")}
    assert roots == {"alpha": "model-alpha", "beta": "model-beta", "legacy": "fake-model"}


def serve_with(routes: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ, "SPECLEARN_UPSTREAM_URL": "http://127.0.0.1:9/v1", "SPECLEARN_DATA_DIR": str(tmp_path),
        "SPECLEARN_SPECS_DIR": str(tmp_path / "specs"), "SPECLEARN_ROUTES": routes, **env,
    }  # fmt: skip
    full_env.pop("TEST_MISSING_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve", "--port", "0"],
        env=full_env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_startup_names_each_mistake_on_its_own_line(tmp_path: Path) -> None:
    routes = orjson.dumps(
        {
            "ok": {"upstreams": [{"url": "https://api.example.com/v1", "model": "m"}]},
            "bad": {"upstreams": [{"url": "ftp://nowhere", "api_key_env": "TEST_MISSING_KEY", "modle": "x"}]},
            "nomodel": {"spec": "s"},
            "typo": {"model": "m", "injektion": "append"},
            "nofile": {"upstreams": [{"url": "http://localhost:1/v1", "model": "m", "api_key_file": "/nonexistent/k"}]},
        }
    ).decode()
    done = serve_with(routes, tmp_path, SPECLEARN_UPSTREAM_RETRIES="-1")
    assert done.returncode == 2
    lines = [line.removeprefix("speclearn serve: invalid setting ") for line in done.stderr.strip().splitlines()]
    assert lines == [
        "SPECLEARN_ROUTES: bad.upstreams[0].url: url 'ftp://nowhere' must be http:// or https:// with a host",
        "SPECLEARN_ROUTES: bad.upstreams[0].api_key_env: api_key_env TEST_MISSING_KEY is not set in the environment",
        "SPECLEARN_ROUTES: bad.upstreams[0].modle: Extra inputs are not permitted",
        "SPECLEARN_ROUTES: nomodel: name the model to send: the route's `model` or each upstream's `model`",
        "SPECLEARN_ROUTES: typo.injektion: Extra inputs are not permitted",
        "SPECLEARN_ROUTES: nofile.upstreams[0].api_key_file: api_key_file /nonexistent/k is not a readable file",
        "SPECLEARN_UPSTREAM_RETRIES: Input should be greater than or equal to 0",
    ]
