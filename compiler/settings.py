"""The compiler's settings: `SPECLEARN_COMPILER_*` variables over the `[compiler]` table of the
TOML file `SPECLEARN_CONFIG` names (proxy/config.py loads both and refuses unknown names); the
shared ones (upstream, storage) come from `proxy.settings`. docs/configuration.md is made from them.

Read once at start-up and passed down as plain objects; the pipeline never reads the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from proxy.config import ConfiguredSettings, Namespace
from proxy.settings import Settings

from .tuning import CompilerTuning, Label, SpecFormat

__all__ = ["CompilerSettings", "Label", "SpecFormat"]

ENV_PREFIX = "SPECLEARN_COMPILER_"


class CompilerSettings(ConfiguredSettings, CompilerTuning):
    """What an operator sets for the compiler: its endpoints, its budget and the approval hold.
    The method's measured constants it inherits (compiler/tuning.py) are no setting."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    # the compiler's LLM: any OpenAI-compatible endpoint, by default the proxy's upstream
    base_url: str | None = Field(None, description="the compiler's LLM, a base URL ending in `/v1`; "
                                 "unset: `SPECLEARN_UPSTREAM_URL`, else the embedded model")  # fmt: skip
    api_key: SecretStr | None = Field(None, description="the key for `base_url`; unset: `SPECLEARN_UPSTREAM_API_KEY`")
    # unset: the model the spec's own traffic used most in the window (compiler/served_model.py),
    # or the embedded model when no endpoint is configured; a hosted API serves only its own names
    model: str | None = Field(None, description="the model asked at `base_url`; unset: the model this spec's "
                              "traffic used most (`speclearn doctor` shows which)")  # fmt: skip
    # the judge (calibrate, validate, gate) may be another model than the proposer/synthesizer:
    # a 0.5B judge is at chance on rules no check expresses, a 1.5B one is not (docs/benchmarks.md)
    judge_base_url: str | None = Field(None, description="the judge's endpoint (…/v1); unset: the compiler's LLM")
    judge_model: str | None = Field(
        None, description="the judge model at that endpoint, or an embedded one (`qwen2.5-coder-1.5b`, the "
        "`judge` extra: used by default on the embedded model)"
    )  # fmt: skip
    judge_api_key: SecretStr | None = Field(None, description="the judge's key; unset: the compiler's")
    # the endpoint's /v1/embeddings are asked only of this model (e.g. text-embedding-3-small),
    # never of the chat model's name; unset: the `embed` extra's MiniLM, else lexical
    embedding_model: str | None = Field(
        None, description="the embedding model compress asks, e.g. `text-embedding-3-small` (never the chat "
        "model's name); unset: the `embed` extra's MiniLM, else lexical similarity"
    )  # fmt: skip
    embedding_base_url: str | None = Field(
        None, description="the embeddings endpoint (…/v1); unset: the compiler's LLM"
    )
    embedding_api_key: SecretStr | None = Field(None, description="the embeddings key; unset: the compiler's")
    # a model that refuses `max_tokens` takes `max_completion_tokens`, which also bounds its hidden
    # reasoning: this many tokens are added to every such call, or a 4-token vote comes back empty
    reasoning_tokens: int = Field(
        1024, ge=0, description="extra completion tokens for a model that takes `max_completion_tokens` "
        "(its hidden reasoning); `speclearn doctor` says when to raise it"
    )  # fmt: skip

    max_llm_calls: int = Field(
        400, ge=1, description="LLM calls one round may make; the round is planned to fit and prints its cost first"
    )
    require_approval: bool = Field(
        False, description="`1`: compiled versions are held, never served, until `speclearn specs approve`"
    )

    def resolved_base_url(self, settings: Settings) -> str | None:
        return (self.base_url or settings.upstream_url or "").rstrip("/") or None

    def resolved_api_key(self, settings: Settings) -> str | None:
        key = self.api_key or settings.upstream_api_key
        return key.get_secret_value() if key else None

    def resolved_judge_api_key(self, settings: Settings) -> str | None:
        key = self.judge_api_key or self.api_key or settings.upstream_api_key
        return key.get_secret_value() if key else None

    def resolved_embedding_base_url(self, settings: Settings) -> str | None:
        return (self.embedding_base_url or "").rstrip("/") or self.resolved_base_url(settings)

    def resolved_embedding_api_key(self, settings: Settings) -> str | None:
        key = self.embedding_api_key or self.api_key or settings.upstream_api_key
        return key.get_secret_value() if key else None

    def state_dir(self, settings: Settings) -> Path:
        return settings.data_dir / "compiler"

    def resolved_cache_dir(self, settings: Settings) -> Path:
        return self.cache_dir or self.state_dir(settings) / "cache"


NAMESPACE = Namespace.of(CompilerSettings, CompilerTuning, env_prefix=ENV_PREFIX, table="compiler")
CompilerSettings.namespace = NAMESPACE
