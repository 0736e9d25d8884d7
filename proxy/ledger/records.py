"""Rows of the ledger: one inference, one feedback event, and the two joined."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

THUMB, SCORE, PAIR = "thumb", "score", "pair"


@dataclass(slots=True)
class InferenceRecord:
    """One proxied call. `request` is the client's body as sent, without the injected spec."""

    id: str
    created_at: float
    route: str
    model: str | None
    spec_name: str | None
    spec_version: int | None
    spec_hash: str | None
    request: dict[str, Any]
    response_text: str | None = None
    tool_calls: list[Any] | None = None
    usage: dict[str, Any] | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    status: str = "ok"  # ok | error | incomplete
    http_status: int = 200
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    assignment_unit: str | None = None  # what the canary split hashed: user | session | request
    arm: str | None = None  # candidate | production as the split chose; None when the client pinned
    upstream: str | None = None  # the upstream (base URL) that answered, or whose failure the client got

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class FeedbackRecord:
    """A judgment on an inference: thumb (+1/-1), score (a float), or pair (inference preferred over rejected).

    `user_id` is the end user who judged (see proxy.identity), `owner` the publishable key that
    created it (its fingerprint; None for a client key), the only key besides a client key that
    may change it. A change keeps `created_at` and sets `updated_at`; a retraction leaves a
    tombstone (`retracted_at`, comment erased) that no reader of judgments sees."""

    id: str
    inference_id: str
    kind: str
    value: float
    created_at: float
    comment: str | None = None
    tags: dict[str, str] | None = None
    rejected_id: str | None = None
    user_id: str | None = None
    owner: str | None = None
    updated_at: float | None = None
    retracted_at: float | None = None

    def same_judgment(self, other: FeedbackRecord) -> bool:
        """Equal apart from arrival time: a retry of the same feedback."""
        return (
            self.inference_id == other.inference_id
            and self.kind == other.kind
            and self.value == other.value
            and self.comment == other.comment
            and (self.tags or None) == (other.tags or None)
            and self.rejected_id == other.rejected_id
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FEEDBACK_COLUMNS = ", ".join(f.name for f in fields(FeedbackRecord))  # the feedback table, in this order
N_FEEDBACK = len(fields(FeedbackRecord))


@dataclass(slots=True)
class FeedbackEvent:
    """Feedback joined to the inference it judges (and, for a pair, the rejected one)."""

    feedback: FeedbackRecord
    inference: InferenceRecord
    rejected: InferenceRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        out = self.feedback.to_dict()
        out["inference"] = self.inference.to_dict()
        out["rejected_inference"] = self.rejected.to_dict() if self.rejected else None
        return out


@dataclass(frozen=True, slots=True)
class ThumbTally:
    """Thumbs on one spec version's inferences given in one time bucket (`start` .. + bucket)."""

    version: int | None
    start: float
    ups: int
    total: int


@dataclass(slots=True)
class DecisionRecord:
    """One look of the auto-promote review at a canary experiment, with the numbers it saw."""

    spec: str
    candidate: int
    production: int
    decision: str  # promote | rollback | continue
    reason: str
    created_at: float
    p_value: float | None = None  # always-valid p-value of "no difference in thumbs-up rate"
    lift: float | None = None  # candidate's up-rate minus production's
    candidate_ups: int = 0
    candidate_n: int = 0
    production_ups: int = 0
    production_n: int = 0
    details: dict[str, Any] = field(default_factory=dict)  # settings used, guardrail numbers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Sequence[Any], details: dict[str, Any] | None) -> DecisionRecord:
        """A stored row in DECISION_COLUMNS order, its details column decoded by the caller."""
        names = [f.name for f in fields(cls)][:-1]  # every column but details, the last
        return cls(**dict(zip(names, row[: len(names)], strict=True)), details=details or {})


DECISION_COLUMNS = ", ".join(f.name for f in fields(DecisionRecord))  # the decision log table, in this order


@dataclass(slots=True)
class Outcome:
    """What the guardrails read of one inference row of an experiment arm."""

    spec_version: int | None
    arm: str | None
    status: str
    latency_ms: float | None
    tokens: int | None  # usage.total_tokens (or prompt + completion), None when not reported


def total_tokens(usage: Any) -> int | None:
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    if isinstance(total, (int, float)):
        return int(total)
    parts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")]
    counted = [int(v) for v in parts if isinstance(v, (int, float))]
    return sum(counted) if counted else None
