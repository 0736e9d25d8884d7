"""The compiler follows the proxy's routes (compiler/served_model.py): with no compiler endpoint
or model configured, the model the traffic used is asked where the proxy sent that traffic.

Two fake hosted upstreams (tests/fake_hosted.py) on loopback with their own keys and model
names: the default one (`SPECLEARN_UPSTREAM_URL`) and a second one that route `team-model`
sends to as `model-b`. The ledger is filled by the real proxy (so it holds what the proxy
records), then the compiler's calls, a round's and `speclearn doctor`'s, must reach the second
upstream with its key and model name, and say so.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from compiler.runner import Context, compile_spec
from compiler.served_model import ModelChoice, recorded_route, through_routes
from compiler.settings import CompilerSettings
from helpers import start_proxy
from proxy.ledger.sqlite import SqliteLedger
from proxy.registry import FileRegistry, specfile
from proxy.settings import Settings
from tests.fake_hosted import CHAT, EMBEDDING, KEY, FakeHosted
from tests.test_hosted_compiler import env_for, spec_with_traffic, speclearn

KEY_B, MODEL_B, JUDGE_B = "sk-team-b", "model-b", "judge-b"
KEY_VAR = "TEST_TEAM_B_KEY"
QUESTION = [{"role": "user", "content": "How do I reset my password?"}]


@dataclass
class Upstreams:
    default: FakeHosted
    default_url: str
    second: FakeHosted
    second_url: str

    def routes(self) -> str:
        """`team-model` goes to the second upstream as `model-b`, with its own key (a variable)."""
        route = {"spec": "support", "upstreams": [{"url": self.second_url, "model": MODEL_B, "api_key_env": KEY_VAR}]}
        return orjson.dumps({"team-model": route}).decode()


@pytest.fixture
def upstreams(monkeypatch: pytest.MonkeyPatch) -> Iterator[Upstreams]:
    monkeypatch.setenv(KEY_VAR, KEY_B)  # read by the in-process settings; subprocesses get it in their env
    default = FakeHosted()
    second = FakeHosted(keys=frozenset({KEY_B}), chat_models=frozenset({MODEL_B, JUDGE_B}))
    with default.serve() as default_url, second.serve() as second_url:
        yield Upstreams(default, default_url, second, second_url)


def context(tmp_path: Path, up: Upstreams, ledger: SqliteLedger | None, **compiler: Any) -> Context:
    settings = Settings(specs_dir=tmp_path / "specs", data_dir=tmp_path / "data", upstream_url=up.default_url,
                        upstream_api_key=KEY, routes=orjson.loads(up.routes()))  # fmt: skip
    registry = FileRegistry(tmp_path / "specs", poll_interval=0)
    return Context(settings, CompilerSettings(seed=11, **compiler), registry, ledger, use_cache=False)


async def open_ledger(data_dir: Path) -> SqliteLedger:
    ledger = SqliteLedger(data_dir / "ledger.sqlite3")
    await ledger.start()
    return ledger


# -- traffic through the real proxy, then the compiler's calls -------------------------------------
async def test_proxy_traffic_on_a_route_is_compiled_on_that_routes_upstream(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    up = upstreams
    proxy = start_proxy(tmp_path, up.default_url, specs={"default": "DEFAULT SPEC", "support": "SUPPORT SPEC"},
                        env={"SPECLEARN_ROUTES": up.routes(), "SPECLEARN_UPSTREAM_API_KEY": KEY, KEY_VAR: KEY_B})  # fmt: skip
    try:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="client-key", max_retries=0)
        for _ in range(3):
            client.chat.completions.create(model="team-model", messages=QUESTION)  # type: ignore[arg-type]
        client.chat.completions.create(model=CHAT, messages=QUESTION, extra_headers={"X-Spec": "support"})  # type: ignore[arg-type]
    finally:
        proxy.stop()
    # what the proxy records: the upstream's name for the model, the client's only in the request
    with sqlite3.connect(tmp_path / "data" / "ledger.sqlite3") as db:
        rows = db.execute("SELECT model, upstream, request FROM inferences WHERE spec_name = 'support'").fetchall()
    routed = [(m, u) for m, u, r in rows if orjson.loads(r)["model"] == "team-model"]
    assert routed == [(MODEL_B, up.second_url)] * 3
    up.second.seen.clear()
    up.default.seen.clear()

    ledger = await open_ledger(tmp_path / "data")
    ctx = context(tmp_path, up, ledger, judge_model=JUDGE_B)
    try:
        choice = await ctx.choose_model("support")
        assert (choice.model, choice.route, choice.base_url) == (MODEL_B, "team-model", up.second_url)
        assert f"route team-model: its first upstream {up.second_url} as {MODEL_B}" in choice.describe()
        assert KEY_B not in choice.describe() + repr(choice)
        async with ctx.llm("support", choice) as llm:
            assert await llm.chat(QUESTION, max_tokens=16)
            judge = ctx.judge_llm("support", llm.budget, choice)
            assert judge is not None
            async with judge:
                assert await judge.chat(QUESTION, max_tokens=16)
    finally:
        await ledger.close()
    asked = [(s.body["model"], s.authorization) for s in up.second.chats()]
    assert asked == [(MODEL_B, f"Bearer {KEY_B}"), (JUDGE_B, f"Bearer {KEY_B}")]
    assert up.default.seen == []  # not even a GET /models


# -- a whole round ---------------------------------------------------------------------------------
async def test_a_round_calls_the_routes_upstream_with_its_key_and_model(tmp_path: Path, upstreams: Upstreams) -> None:
    up = upstreams
    await spec_with_traffic(tmp_path, MODEL_B)  # as the proxy records team-model's traffic (test above)
    up.second.embedding_models = frozenset({EMBEDDING})
    ledger = await open_ledger(tmp_path / "data")
    try:
        result = await compile_spec(context(tmp_path, up, ledger, embedding_model=EMBEDDING), "support")
    finally:
        await ledger.close()
    assert result.result != "error", result.reason
    chats = up.second.chats()
    assert up.second.fake.count("propose rules") >= 1 and len(chats) > 20  # a whole round, not a probe
    assert {c.body["model"] for c in chats} == {MODEL_B} and {c.authorization for c in chats} == {f"Bearer {KEY_B}"}
    embedded = [s for s in up.second.seen if s.path == "/v1/embeddings"]
    assert embedded and {s.authorization for s in embedded} == {f"Bearer {KEY_B}"}
    assert up.default.seen == []
    said = f"route team-model: its first upstream {up.second_url} as {MODEL_B}"
    assert any(said in n for n in result.cost["notes"]) and not any(KEY_B in n for n in result.cost["notes"])
    assert result.version is not None  # the fake's votes teach: a version is published, its front matter says
    newest = max((tmp_path / "specs" / "support" / "versions").glob("*.md"), key=lambda p: int(p.stem))
    meta = specfile.parse(newest.read_text())[0]
    assert meta["compiler"]["model"] == MODEL_B and any(said in n for n in meta["cost"]["notes"])


async def test_an_explicit_compiler_endpoint_or_model_still_wins(tmp_path: Path, upstreams: Upstreams) -> None:
    up = upstreams
    await spec_with_traffic(tmp_path, MODEL_B)
    ledger = await open_ledger(tmp_path / "data")
    try:
        by_url = context(tmp_path, up, ledger, base_url=up.default_url)
        choice = await by_url.choose_model("support")
        assert (choice.model, choice.route) == (MODEL_B, None) and "route" not in choice.why
        assert by_url.endpoint(choice) == (up.default_url, KEY)
        by_model = context(tmp_path, up, ledger, model=CHAT)
        choice = await by_model.choose_model("support")
        assert (choice.model, choice.route) == (CHAT, None) and by_model.endpoint(choice) == (up.default_url, KEY)
        # a configured model that is a route's name (a client's alias) is reached through that route
        by_alias = context(tmp_path, up, ledger, model="team-model")
        choice = await by_alias.choose_model("support")
        assert (choice.model, choice.route) == (MODEL_B, "team-model")
        assert by_alias.endpoint(choice) == (up.second_url, KEY_B)
    finally:
        await ledger.close()


# -- speclearn doctor --------------------------------------------------------------------------------
def doctor_env(tmp_path: Path, up: Upstreams, key: str) -> dict[str, str]:
    return env_for(tmp_path, up.default_url, SPECLEARN_ROUTES=up.routes(), **{KEY_VAR: key})


async def test_doctor_names_the_route_and_upstream_and_never_the_key(tmp_path: Path, upstreams: Upstreams) -> None:
    up = upstreams
    await spec_with_traffic(tmp_path, MODEL_B)
    done = speclearn(doctor_env(tmp_path, up, KEY_B), "doctor", "support")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        f"note: compiler: model {MODEL_B}: used by 40 of 40 of spec support's answered requests in the last 30 days; "
        f"route team-model: its first upstream {up.second_url} as {MODEL_B}"
    )
    assert f"ok: compiler: {MODEL_B} at {up.second_url} answers" in lines
    assert KEY_B not in done.stdout + done.stderr
    assert [(s.body["model"], s.authorization) for s in up.second.chats()] == [(MODEL_B, f"Bearer {KEY_B}")]
    assert up.default.seen == []


async def test_doctor_says_which_routes_key_was_refused(tmp_path: Path, upstreams: Upstreams) -> None:
    up = upstreams
    await spec_with_traffic(tmp_path, MODEL_B)
    done = speclearn(doctor_env(tmp_path, up, "sk-wrong"), "doctor", "support")
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        f"problem: compiler: {up.second_url} refused the key (invalid_api_key): set route team-model's api_key_env "
        "or api_key_file in SPECLEARN_ROUTES or SPECLEARN_COMPILER_API_KEY"
    ) in done.stdout.splitlines()
    assert up.default.seen == []


# -- which route the ledger's model came through ----------------------------------------------------
def test_the_recorded_model_is_traced_to_its_route(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("sk-file\n")

    def up(url: str, model: str) -> dict[str, Any]:
        return {"url": url, "model": model, "api_key_file": str(key)}

    routes = {
        "big": {"upstreams": [up("http://a/v1", "gpt-4o")]},
        "fast": {"upstreams": [up("http://b/v1", "gpt-4o-mini"), up("http://c/v1", "mini-fallback")]},
        "sales-fast": {"spec": "sales", "upstreams": [up("http://d/v1", "gpt-4o-mini")]},
        "legacy": {"model": "old-model"},
    }
    settings = Settings(upstream_url="http://default/v1", routes=routes)
    assert recorded_route(settings, "gpt-4o", None) == "big"
    assert recorded_route(settings, "gpt-4o-2024-08-06", None) == "big"  # a dated snapshot of the name sent
    assert recorded_route(settings, "gpt-4o-mini-2024-07-18", None) == "fast"  # not big: gpt-4o is no prefix match
    assert recorded_route(settings, "gpt-4o-mini", "sales") == "sales-fast"  # the route serving the spec first
    assert recorded_route(settings, "gpt-4o-mini", "support") == "fast"  # else the first configured
    assert recorded_route(settings, "mini-fallback", None) == "fast"
    assert recorded_route(settings, "legacy", None) == "legacy"  # a route's own name
    assert recorded_route(settings, "gpt-5", None) is None  # the default upstream's traffic

    fell_back = through_routes(ModelChoice("mini-fallback", "used most"), settings, None)
    assert (fell_back.model, fell_back.base_url, fell_back.api_key) == ("gpt-4o-mini", "http://b/v1", "sk-file")
    assert (
        fell_back.why
        == "used most; route fast: its first upstream http://b/v1 as gpt-4o-mini (the ledger recorded mini-fallback)"
    )
    old = through_routes(ModelChoice("old-model", "used most"), settings, None)
    assert (old.model, old.route, old.base_url) == ("old-model", "legacy", None)
    assert old.why == "used most; route legacy: the default upstream as old-model"
    unrouted = ModelChoice("gpt-5", "used most")
    assert through_routes(unrouted, settings, None) is unrouted
