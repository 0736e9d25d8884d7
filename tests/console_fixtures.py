"""Shared by the console and browser-feedback tests: a registry with real versions (one with
compiler-style front matter) and an in-process proxy app."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.ledger import THUMB, FeedbackRecord, InferenceRecord
from proxy.registry.files import FileRegistry
from proxy.settings import Settings

ADMIN_KEY = "admin-secret-key"
SECRET = "console-test-secret"
V1_TEXT = "You are a helpful support assistant. Answer clearly."
V2_TEXT = "You are a helpful support assistant. Answer clearly. Answer in at most 25 words."
COMPILER_META: dict[str, Any] = {
    "compiler": {"model": "fake-model", "seed": 7},
    "feedback_window": {"since": 1764000000.0, "until": 1764003600.0, "events": 40},
    "principles": [
        {
            "text": "Answer in at most 25 words.", "source": "comment", "status": "added", "check": "max_words:25",
            "method": "check", "support": 9, "relevant": 10, "heldout": 12, "accuracy": 0.9, "prevalence": 0.833,
            "evidence": {"comments": ["way too long", "just give me the short answer"], "count": 2},
        },
        {
            "text": "Be friendly.", "source": "llm", "status": "kept", "method": "judge", "judge": "fake-model, both orders",
            "support": 5, "relevant": 8, "heldout": 12, "accuracy": 0.625, "prevalence": 0.667,
        },
    ],
    "dropped_principles": [{"text": "Explain every detail.", "source": "llm", "status": "dropped", "method": "judge",
                            "support": 1, "relevant": 6}],
    "gate": {"passed": True, "metric": "checks", "candidate_accuracy": 0.8333, "current_accuracy": 0.5, "heldout_pairs": 12},
    "cost": {"calls": 11, "tokens": 2804, "seconds": 52.1},
}  # fmt: skip


def publish_versions(specs_dir: Path) -> None:
    """support@1 (human, production) and support@2 (compiler front matter, candidate)."""
    registry = FileRegistry(specs_dir, poll_interval=0)
    registry.publish_sync("support", V1_TEXT, labels=["production"])
    registry.publish_sync("support", V2_TEXT, COMPILER_META, "compiler", 1, ["candidate"])


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "specs_dir": tmp_path / "specs", "data_dir": tmp_path / "data", "admin_key": ADMIN_KEY,
        "console_secret": SECRET, "upstream_url": "http://127.0.0.1:9/v1", "registry_poll_interval": 0,
        "ledger_flush_interval": 0.0,
    }  # fmt: skip
    values.update(overrides)
    return Settings(**values)


@contextmanager
def client(tmp_path: Path, base_url: str = "http://testserver", **overrides: Any) -> Iterator[TestClient]:
    if not (tmp_path / "specs").exists():
        publish_versions(tmp_path / "specs")
    with TestClient(create_app(settings(tmp_path, **overrides)), base_url=base_url) as c:
        yield c


def add_inference(c: TestClient, inference_id: str, version: int = 1, spec: str = "support") -> None:
    """An inference row as the proxy logs it, stored before returning."""
    ledger = c.app.state.proxy.ledger  # type: ignore[attr-defined]
    rec = InferenceRecord(inference_id, time.time(), "chat", "m", spec, version, "ab" * 32, {"messages": []})
    c.portal.call(ledger._write_inferences, [rec])  # type: ignore[attr-defined]


def add_thumb(c: TestClient, feedback_id: str, inference_id: str, up: bool, at: float) -> None:
    ledger = c.app.state.proxy.ledger  # type: ignore[attr-defined]
    c.portal.call(ledger.add_feedback, FeedbackRecord(feedback_id, inference_id, THUMB, 1.0 if up else -1.0, at))  # type: ignore[attr-defined]


def publish_held(c: TestClient, text: str, label: str) -> int:
    """A version the compiler published in approval mode (held, asking for `label`), seen by the app."""
    registry = FileRegistry(c.app.state.proxy.settings.specs_dir, poll_interval=0)  # type: ignore[attr-defined]
    registry.hold_compiled = True
    version = registry.publish_sync("support", text, None, "compiler", 2, [label]).version
    c.portal.call(c.app.state.proxy.registry.refresh)  # type: ignore[attr-defined]
    return version
