"""The proxy's settings: `SPECLEARN_*` variables over the TOML file `SPECLEARN_CONFIG` names
(proxy/config.py loads both and refuses unknown names); docs/configuration.md is made from them.

Read once at start-up and passed down; nothing deeper reads the environment.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from .config import PREFIX, ConfiguredSettings, Namespace
from .tuning import ProxyTuning

InjectionMode = Literal["prepend", "append", "replace"]
ContentMode = Literal["full", "redacted", "none"]


class RouteUpstream(BaseModel):
    """One upstream of a route (proxy/upstreams.py): where to send, with which key, which model name.

    The key is named, never written here: an environment variable or a file (a mounted secret)."""

    model_config = ConfigDict(extra="forbid")

    url: str
    model: str | None = None  # the model name this upstream serves; None: the route's `model`
    api_key_env: str | None = None
    api_key_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url {value!r} must be http:// or https:// with a host")
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _check_env(cls, value: str | None) -> str | None:
        if value is not None and not os.environ.get(value):
            raise ValueError(f"api_key_env {value} is not set in the environment")
        return value

    @field_validator("api_key_file")
    @classmethod
    def _check_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"api_key_file {value} is not a readable file")
        return value

    @model_validator(mode="after")
    def _one_key(self) -> RouteUpstream:
        if self.api_key_env is not None and self.api_key_file is not None:
            raise ValueError("give api_key_env or api_key_file, not both")
        return self

    def api_key(self) -> str | None:
        """Read once at start-up (the key of a file is its first line)."""
        if self.api_key_env is not None:
            return os.environ.get(self.api_key_env) or None
        if self.api_key_file is not None:
            return self.api_key_file.read_text().strip() or None
        return None


class Route(BaseModel):
    """A model alias: clients ask for `alias`, the upstream gets `model` and the request gets `spec`.

    `upstreams`: the first is primary, the rest fallbacks in order; none = the default upstream."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    spec: str | None = None
    injection: InjectionMode | None = None
    upstreams: list[RouteUpstream] = []

    @model_validator(mode="after")
    def _check(self) -> Route:
        missing = [i for i, u in enumerate(self.upstreams) if u.model is None and self.model is None]
        if missing or (not self.upstreams and self.model is None):
            raise ValueError("name the model to send: the route's `model` or each upstream's `model`")
        return self


class Settings(ConfiguredSettings, ProxyTuning):
    """The proxy's settings: `SPECLEARN_<NAME>`, or `<name>` at the top of the config file.
    The measured constants it inherits (proxy/tuning.py) are fields, but no setting."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="forbid")

    upstream_url: str | None = Field(
        None, description="upstream base URL ending in `/v1`; unset: the embedded local model (`speclearn serve`)"
    )
    upstream_api_key: SecretStr | None = Field(
        None, description="sent upstream; unset: the client's `Authorization` header is forwarded"
    )
    specs_dir: Path = Field(Path("./specs"), description="the file spec registry")
    data_dir: Path = Field(Path("./data"), description="the SQLite ledger (`ledger.sqlite3`) and the compiler's state")
    database_url: str | None = Field(
        None, description="`postgresql://…`: ledger and registry in PostgreSQL, shared by several replicas"
    )
    database_pool_size: int = Field(
        4, ge=2, description="ledger connections per worker (PostgreSQL); each worker also holds 2 registry "
        "connections and 1 LISTEN: keep replicas x workers x (this + 3) under `max_connections`"
    )  # fmt: skip

    default_spec: str = Field("default", description="the spec of requests that name none")
    injection: InjectionMode = Field(
        "prepend", description="where the spec goes: `prepend` (first system message), `append` or `replace`"
    )
    canary_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="share (0–1) of users (else sessions, else requests) that name no "
        "version served the `candidate` label, when it exists; sticky by a stable hash. Above 0, a compile round "
        "whose candidate held-out feedback cannot decide may publish it as `candidate` for live traffic to decide "
        "(docs/compiler.md); 0.05–0.2 is usual"
    )  # fmt: skip
    routes: dict[str, Route] = Field(
        {}, description='model aliases, JSON: `{"alias": {"model": "...", "spec": "...", "injection": "...", '
        '"upstreams": [{"url": "...", "model": "...", "api_key_env": "..."}]}}` (upstreams: the first is '
        "primary, the rest fallbacks; a key by `api_key_env` or `api_key_file`, never inline)"
    )  # fmt: skip

    api_keys: Annotated[list[str], NoDecode] = Field(
        [], description="comma-separated client keys for the proxy, never forwarded; none: an open proxy"
    )
    admin_key: SecretStr | None = Field(None, description="key for `/admin/*` and the console; unset: both off")
    # with an upstream key and no client keys, anyone who reaches the proxy spends the team's key:
    # `speclearn serve` refuses that on a non-loopback address unless this says it is meant
    allow_open_proxy: bool = Field(
        False, description="with `SPECLEARN_UPSTREAM_API_KEY` set and no client keys, `serve` refuses any "
        "non-loopback address unless this is `1`"
    )  # fmt: skip
    # Signs console sessions (with the admin key). Unset: `speclearn serve` draws one per start
    # and hands it to its workers, so a restart logs everyone out.
    console_secret: SecretStr | None = Field(
        None, description="signs console sessions; unset: drawn at each start (a restart logs everyone out); "
        "set it when replicas share the console"
    )  # fmt: skip
    cors_origins: Annotated[list[str], NoDecode] = Field(
        [], description="comma-separated origins that may `POST /v1/feedback` from a browser"
    )
    feedback_keys: Annotated[list[str], NoDecode] = Field(
        [], description="comma-separated publishable keys: `/v1/feedback` only, rate-limited per key and address"
    )

    read_timeout: float = Field(600.0, gt=0, description="seconds the upstream may stay silent (between bytes)")
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1, description="larger request bodies get a 413")
    # retries before the first byte reached the client, then the route's next upstream (proxy/upstreams.py)
    upstream_retries: int = Field(
        2, ge=0, le=10, description="retries per upstream on connect errors, resets, 429 and 5xx, before the "
        "first byte reached the client; then the route's next upstream"
    )  # fmt: skip
    upstream_retry_budget: float = Field(10.0, ge=0, description="seconds all retries and waits of one request may add")

    # -- data governance (proxy/ledger/content.py, proxy/retention.py, docs/data.md) ----------
    # full: prompts and answers as sent; redacted: e-mail addresses, phone and card numbers,
    # secrets and the custom patterns replaced by [EMAIL]-style placeholders before storing;
    # none: no prompt, answer or comment text at all (ids, metadata, usage only)
    ledger_content: ContentMode = Field(
        "full", description="`full`, `redacted` (personal data and secrets replaced by `[EMAIL]`-style "
        "placeholders before storage; the `redact` extra) or `none` (no prompt, answer or comment text)"
    )  # fmt: skip
    redact_patterns: dict[str, str] = Field(
        {}, description='your own regexes redacted too, JSON: `{"EMPLOYEE_ID": "EMP-\\\\d{6}"}`'
    )
    redact_patterns_file: Path | None = Field(
        None, description="a file of `NAME REGEX` lines, added to `redact_patterns`"
    )
    redact_phone_regions: Annotated[list[str], NoDecode] = Field(
        ["US", "GB"], description="comma-separated regions whose national phone formats are redacted "
        "(international ones always are)"
    )  # fmt: skip
    ledger_retention_days: float | None = Field(
        None, gt=0, description="rows older than this are purged hourly in small batches, with their "
        "feedback; unset: kept"
    )  # fmt: skip

    local_model: str = Field(
        "qwen2.5-coder-0.5b", description="the embedded model `serve` starts without an upstream "
        "(`qwen2.5-coder-1.5b` needs the `judge` extra)"
    )  # fmt: skip
    model_cache_dir: Path = Field(
        Path.home() / ".cache" / "speclearn" / "models", description="where the embedded models are assembled"
    )

    @field_validator("api_keys", "cors_origins", "feedback_keys", "redact_phone_regions", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("redact_patterns")
    @classmethod
    def _check_patterns(cls, value: dict[str, str]) -> dict[str, str]:
        import re

        for name, pattern in value.items():
            if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,31}", name):
                raise ValueError(f"redaction pattern name {name!r}: use capitals, digits and _ (e.g. EMPLOYEE_ID)")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"redaction pattern {name}: {pattern!r} is not a regular expression ({exc})") from None
        return value

    @field_validator("upstream_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / "ledger.sqlite3"

    def open_proxy_refusal(self, host: str) -> str | None:
        """Why serving on `host` would hand the team's upstream key to anyone who reaches it
        (an upstream key, no client keys, not loopback, not allowed explicitly); None: it would not."""
        if self.upstream_api_key is None or not self.upstream_api_key.get_secret_value() or self.api_keys:
            return None
        if self.allow_open_proxy or is_loopback(host):
            return None
        return (
            f"refusing to serve on {host} an open proxy that spends SPECLEARN_UPSTREAM_API_KEY: set "
            "SPECLEARN_API_KEYS (the keys your clients send), or SPECLEARN_ALLOW_OPEN_PROXY=1 if that is meant"
        )


def problem_lines(exc: ValidationError) -> list[str]:
    """One line per mistake, named as it is set: `SPECLEARN_ROUTES: chat.upstreams[0].url: ...`."""
    lines = []
    for error in exc.errors():
        head, *rest = [str(part) for part in error["loc"]] or ["settings"]
        where = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in rest).lstrip(".")
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"SPECLEARN_{head.upper()}: {where + ': ' if where else ''}{message}")
    return lines


def is_loopback(host: str) -> bool:
    """Only this machine can connect: localhost or a loopback address (0.0.0.0 and names are not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# the proxy owns SPECLEARN_* and the file's top level, but for the compiler's part of both
NAMESPACE = Namespace.of(Settings, ProxyTuning, env_prefix=PREFIX, table=None,
                         others_env=("SPECLEARN_COMPILER_",), others_keys=("compiler",))  # fmt: skip
Settings.namespace = NAMESPACE
