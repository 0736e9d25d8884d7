"""Compiler configuration: env vars `SPECLEARN_COMPILER_*` (the shared ones come from `proxy.settings`).

Read once at start-up and passed down as plain objects; the pipeline never reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from proxy.settings import Settings

Label = Literal["candidate", "production"]
SpecFormat = Literal["sections", "persona", "rules"]  # rules: the former name of sections


class CompilerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPECLEARN_COMPILER_", extra="ignore")

    # the compiler's LLM: any OpenAI-compatible endpoint, by default the proxy's upstream
    base_url: str | None = Field(None, description="Base URL ending in /v1; default: SPECLEARN_UPSTREAM_URL")
    api_key: SecretStr | None = Field(None, description="Default: SPECLEARN_UPSTREAM_API_KEY")
    # unset: the model the spec's own traffic used most in the window (compiler/served_model.py),
    # or the embedded model when no endpoint is configured; a hosted API serves only its own names
    model: str | None = Field(None, description="Default: the model this spec's traffic used most")
    seed: int = 0
    temperature: float = 0.0
    propose_temperature: float = 0.7  # diversity across proposal passes; seeded, so reproducible
    timeout: float = 120.0
    concurrency: int = 4
    retries: int = 3
    # a model that refuses `max_tokens` takes `max_completion_tokens`, which also bounds its hidden
    # reasoning: this many tokens are added to every such call, or a 4-token vote comes back empty
    reasoning_tokens: int = Field(1024, ge=0)
    # a calibrated judge needs a graded vote: where the endpoint returns no logprobs, each question
    # is asked for this many sampled answers (`n`, temperature 1) and the share of each option counts
    judge_samples: int = Field(5, ge=1)

    # budget of one round
    max_llm_calls: int = 400
    max_tokens: int = 400_000
    judge_max_tokens: int = 4
    propose_max_tokens: int = 256
    synth_max_tokens: int = 512

    # the method's sizes
    proposal_passes: int = 3
    proposal_sample: int = 20  # pairs shown to the proposer over all passes
    max_candidates: int = 12  # principles that reach validation after compression
    validation_pairs: int = 12  # held-out pairs each principle is judged on (x2 orders)
    gate_pairs: int = 16  # held-out pairs the gate judges (x2 orders x2 specs)
    top_k: int = 8
    calibration_pairs: int = 6  # menu items: this round's pairs a candidate's check decides
    # open items: shipped rules no check expresses (compiler/data/calibration.jsonl), all 24 of
    # them: on 8 the fitted scale was unstable (a 1.5B judge 4/8 in a round, 42/54 in bench.judges);
    # the LLM cache makes them free after a judge's first round
    calibration_open: int = 24
    judge_min_agreement: float = 0.67  # and a Wilson lower bound above 0.5, else not trusted
    # judge kinds tried in order on the judge model, the first trusted one judges; one by default
    # (bench/README.md, "Judges": pointwise+calibrated, as accurate and cheaper), since every kind
    # tried is one more chance to trust a judge by luck
    judges: list[str] = Field(default_factory=lambda: ["pointwise+calibrated"])
    min_accuracy: float = 0.55
    min_prevalence: float = 0.1
    # every new principle needs held-out support from this many distinct voices (users; sessions
    # where no user is known; all anonymous feedback is one voice), and a wish learned from
    # comments this many distinct commenters: no one user writes the spec
    min_users: int = 2
    # sections: the person's text kept, the learned rules listed after it; persona: a paragraph
    # there instead, for a short instruction only (compiler/synthesize.py)
    spec_format: SpecFormat = "sections"
    # every request carries the spec: a learned section over this many (estimated) tokens drops its
    # lowest-ranked rules until it fits (the person's own text is never cut)
    max_spec_tokens: int = 600
    similarity: float = 0.6  # compress: token-Jaccard/difflib threshold for near-duplicates
    # compress by embeddings (the embedding model's, else the `embed` extra's MiniLM) at
    # this cosine; on tests/data/rule_pairs.jsonl precision 0.90 / recall 0.60 vs lexical 0.50 / 0.13
    embed_similarity: float = 0.55
    embeddings: bool = True  # False: lexical similarity only
    # the endpoint's /v1/embeddings are asked only of this model (e.g. text-embedding-3-small),
    # never of the chat model's name; unset: the `embed` extra's MiniLM, else lexical
    embedding_model: str | None = Field(None, description="Embedding model name, e.g. text-embedding-3-small")
    embedding_base_url: str | None = Field(None, description="Embeddings endpoint (…/v1); default: the compiler's LLM")
    embedding_api_key: SecretStr | None = Field(None, description="Default: the compiler's API key")

    # dataset
    holdout_fraction: float = 0.3
    max_per_user: int = 50  # judgments kept per voice: a user, a session, or all anonymous feedback as one
    window_days: float = 30.0
    min_heldout_pairs: int = 2
    # With no up/down pairs at all (a wish the answers never meet), learn from down-vote comments
    # that name a checkable wish, validated and gated on single held-out votes (bench/README.md:
    # French 0.00 -> 0.83 vs oracle 0.75; an unprovable closing-line spec was refused by the gate).
    unary_comments: bool = True
    # Comments no built-in pattern reads ("give me an example") are turned into a rule with a
    # check by the LLM, one call per distinct comment, the most repeated first (compiler/wishes.py)
    wish_translations: int = 6
    translate_max_tokens: int = 64

    # gate and publish
    gate_alpha: float = 0.05  # the gate's error rate: how often feedback with no taste may publish
    min_requesting_users: int = 2  # a wish learned from comments alone must be asked by this many users
    gate_margin: float = 0.0
    gate_regenerate: bool = False
    answer_max_tokens: int = 256  # regenerated answers (gate_regenerate)
    publish_label: Label = "candidate"
    auto_promote: bool = False  # promote/roll back `candidate` from live thumbs (needs a canary share)
    promote_min_feedback: int = 50  # thumbs on each of candidate and production before deciding

    # sidecar
    interval: float = 300.0
    min_feedback: int = 20
    max_backoff: float = 3600.0
    metrics_port: int = 9101

    cache_dir: Path | None = Field(None, description="Default: DATA_DIR/compiler/cache")

    # the judge (calibrate, validate, gate) may be another model than the proposer/synthesizer:
    # a 0.5B judge is at chance on rules no check expresses, a 1.5B one is not (bench/README.md)
    judge_base_url: str | None = Field(None, description="Judge endpoint (…/v1); default: the compiler's LLM")
    judge_model: str | None = Field(
        None, description="Judge model name at that endpoint, or an embedded model (e.g. qwen2.5-coder-1.5b)"
    )
    judge_api_key: SecretStr | None = Field(None, description="Default: the compiler's API key")

    # live experiments (promote.py): an always-valid test on the canary's thumbs, guardrails on its
    # inference rows, and the approval hold. `promote_min_feedback` above is the test's burn-in.
    promote_alpha: float = Field(0.05, gt=0, lt=1, description="error rate of promote/rollback, however often we look")
    promote_mde: float = Field(0.05, gt=0, lt=1, description="lift in thumbs-up rate the mSPRT is tuned to detect")
    guardrail_min_requests: int = 100  # inference rows on each arm before the guardrails judge
    guardrail_max_error_increase: float = 0.01  # candidate error rate above production's (absolute), if significant
    guardrail_max_latency_ratio: float = 1.5  # candidate p95 latency / production's
    guardrail_max_tokens_ratio: float = 1.5  # candidate mean tokens per request / production's
    require_approval: bool = False  # compiled versions wait for `speclearn specs approve`, never served before

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
