"""Settings sources and precedence; the three injection modes on chat and Responses bodies."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from proxy.injection import inject_chat, inject_responses
from proxy.settings import Settings

SYSTEM = {"role": "system", "content": "client system"}
DEVELOPER = {"role": "developer", "content": "client developer"}
USER = {"role": "user", "content": "hi"}
SPEC = {"role": "system", "content": "SPEC"}


def test_toml_file_then_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "speclearn.toml"
    config.write_text(
        'upstream_url = "http://toml/v1/"\ninjection = "append"\nread_timeout = 42\n'
        '[routes.support-bot]\nmodel = "gpt-x"\nspec = "support"\n'
    )
    monkeypatch.setenv("SPECLEARN_CONFIG", str(config))
    monkeypatch.setenv("SPECLEARN_READ_TIMEOUT", "7")
    monkeypatch.setenv("SPECLEARN_API_KEYS", "a, b,,c")
    settings = Settings()
    assert settings.upstream_url == "http://toml/v1"  # trailing slash stripped
    assert settings.injection == "append"
    assert settings.read_timeout == 7  # the environment wins over the file
    assert settings.routes["support-bot"].model == "gpt-x"
    assert settings.api_keys == ["a", "b", "c"]


def test_bad_settings_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECLEARN_INJECTION", "sideways")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("SPECLEARN_INJECTION", "prepend")
    monkeypatch.setenv("SPECLEARN_CANARY_FRACTION", "1.5")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("prepend", [SPEC, SYSTEM, DEVELOPER, USER]),
        ("append", [SYSTEM, DEVELOPER, SPEC, USER]),
        ("replace", [SPEC, USER]),
    ],
)
def test_chat_injection_modes_leave_the_client_list_untouched(mode: str, expected: list[dict[str, str]]) -> None:
    client_messages = [SYSTEM, DEVELOPER, USER]
    body = {"messages": client_messages}
    inject_chat(body, "SPEC", mode)  # type: ignore[arg-type]
    assert body["messages"] == expected
    assert client_messages == [SYSTEM, DEVELOPER, USER]  # what the ledger stores


@pytest.mark.parametrize(
    ("mode", "own", "expected"),
    [
        ("prepend", "mine", "SPEC\n\nmine"),
        ("append", "mine", "mine\n\nSPEC"),
        ("replace", "mine", "SPEC"),
        ("prepend", None, "SPEC"),
    ],
)
def test_responses_injection_modes(mode: str, own: str | None, expected: str) -> None:
    body = {"input": "hi", "instructions": own}
    inject_responses(body, "SPEC", mode)  # type: ignore[arg-type]
    assert body["instructions"] == expected
