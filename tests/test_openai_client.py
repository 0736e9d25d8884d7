"""The official `openai` client, unchanged but for base_url, against the proxy and a recording upstream."""

from __future__ import annotations

import httpx
import openai
import pytest

from helpers import FakeUpstream, ProxyProcess

MESSAGES = [{"role": "user", "content": "hello"}]


def client(proxy: ProxyProcess, base_url: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url or proxy.base_url, api_key="client-key", max_retries=0)


def test_spec_is_the_first_system_message_and_client_system_survives(
    proxy: ProxyProcess, fake_upstream: FakeUpstream
) -> None:
    messages = [{"role": "system", "content": "client system"}, *MESSAGES]
    raw = client(proxy).chat.completions.with_raw_response.create(model="m", messages=messages)
    completion = raw.parse()
    sent = fake_upstream.last().body["messages"]
    assert sent[0] == {"role": "system", "content": "DEFAULT SPEC\n"}
    assert sent[1:] == messages
    assert completion.choices[0].message.content == "system=DEFAULT SPEC\n"
    assert raw.headers["x-spec-version"] == "default@1"
    assert completion.id == raw.headers["x-inference-id"]
    assert float(raw.headers["x-speclearn-overhead-ms"]) >= 0


def test_path_form_selects_the_spec(proxy: ProxyProcess, fake_upstream: FakeUpstream) -> None:
    raw = client(proxy, proxy.root_url + "/specs/support/v1").chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES
    )
    assert fake_upstream.last().body["messages"][0]["content"] == "SUPPORT SPEC\n"
    assert raw.headers["x-spec-version"] == "support@1"


@pytest.mark.parametrize(
    ("header", "first_system", "version"),
    [("support", "SUPPORT SPEC\n", "support@1"), ("support@1", "SUPPORT SPEC\n", "support@1"),
     ("support@production", "SUPPORT SPEC\n", "support@1"), ("none", None, "none")],
)  # fmt: skip
def test_header_form(
    proxy: ProxyProcess, fake_upstream: FakeUpstream, header: str, first_system: str | None, version: str
) -> None:
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, extra_headers={"X-Spec": header}
    )
    sent = fake_upstream.last().body["messages"]
    assert (sent[0]["content"] if sent[0]["role"] == "system" else None) == first_system
    assert raw.headers["x-spec-version"] == version


def test_model_alias_maps_model_and_spec(proxy: ProxyProcess, fake_upstream: FakeUpstream) -> None:
    raw = client(proxy).chat.completions.with_raw_response.create(model="support-bot", messages=MESSAGES)
    sent = fake_upstream.last().body
    assert sent["model"] == "fake-model"
    assert sent["messages"][0]["content"] == "SUPPORT SPEC\n"
    assert raw.headers["x-spec-version"] == "support@1"


def test_unknown_spec_is_a_404_in_openai_shape(proxy: ProxyProcess) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client(proxy).chat.completions.create(model="m", messages=MESSAGES, extra_headers={"X-Spec": "nope"})
    assert err.value.body["code"] == "spec_not_found"
    assert "nope" in err.value.body["message"]


def test_unknown_fields_tools_n_and_response_format_pass_through(
    proxy: ProxyProcess, fake_upstream: FakeUpstream
) -> None:
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
    ]
    completion = client(proxy).chat.completions.create(
        model="m", messages=MESSAGES, tools=tools, n=2, response_format={"type": "json_object"},
        extra_body={"vendor_knob": {"x": 1}}, extra_headers={"X-Fake": "tools"},
    )  # fmt: skip
    sent = fake_upstream.last().body
    assert sent["tools"] == tools and sent["n"] == 2 and sent["response_format"] == {"type": "json_object"}
    assert sent["vendor_knob"] == {"x": 1}
    assert len(completion.choices) == 2
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert completion.model_extra["x_unknown_field"] == {"kept": True}


def test_streaming_relays_chunks_usage_and_rewrites_id(proxy: ProxyProcess) -> None:
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "system=DEFAULT SPEC\n"
    assert {c.id for c in chunks} == {raw.headers["x-inference-id"]}
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 7
    assert raw.headers["x-spec-version"] == "default@1"


async def test_async_client_streaming(proxy: ProxyProcess) -> None:
    aclient = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="k", max_retries=0)
    stream = await aclient.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == "system=DEFAULT SPEC\n"
    await aclient.close()


def test_responses_api_gets_spec_as_instructions(proxy: ProxyProcess, fake_upstream: FakeUpstream) -> None:
    raw = client(proxy).responses.with_raw_response.create(model="m", input="hi", instructions="client instr")
    response = raw.parse()
    assert fake_upstream.last("/v1/responses").body["instructions"] == "DEFAULT SPEC\n\n\nclient instr"
    assert response.output_text == "response"
    assert raw.headers["x-spec-version"] == "default@1"


def test_responses_streaming_events_are_relayed(proxy: ProxyProcess) -> None:
    events = list(client(proxy).responses.create(model="m", input="hi", stream=True))
    assert [e.type for e in events] == [
        "response.created", "response.output_text.delta", "response.output_text.delta", "response.completed",
    ]  # fmt: skip


def test_completions_and_embeddings_pass_through_without_spec(proxy: ProxyProcess, fake_upstream: FakeUpstream) -> None:
    c = client(proxy)
    assert c.completions.create(model="m", prompt="x").choices[0].text == "completed"
    assert "DEFAULT SPEC" not in str(fake_upstream.last("/v1/completions").body)
    assert c.embeddings.create(model="m", input="x").data[0].embedding == [0.1, 0.2]


def test_models_lists_upstream_and_aliases(proxy: ProxyProcess) -> None:
    ids = {m.id for m in client(proxy).models.list()}
    assert ids == {"fake-model", "support-bot"}


def test_other_v1_paths_are_relayed_untouched(proxy: ProxyProcess, fake_upstream: FakeUpstream) -> None:
    r = httpx.get(proxy.base_url + "/files/abc?purpose=x")
    assert r.json() == {"echo": "/v1/files/abc", "method": "GET", "query": "purpose=x"}


def test_client_authorization_is_forwarded_when_proxy_has_no_key(
    proxy: ProxyProcess, fake_upstream: FakeUpstream
) -> None:
    client(proxy).chat.completions.create(model="m", messages=MESSAGES)
    headers = {k.lower(): v for k, v in fake_upstream.last().headers.items()}
    assert headers["authorization"] == "Bearer client-key"
    assert "x-spec" not in headers


def test_client_supplied_inference_id_is_honoured(proxy: ProxyProcess) -> None:
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, extra_headers={"X-Inference-Id": "app-123"}
    )
    assert raw.headers["x-inference-id"] == "app-123"
    assert raw.parse().id == "app-123"
