"""A real compile with the embedded local model (Qwen2.5-Coder-0.5B on llama.cpp, 2 CPU cores).

Bootstraps a spec from the ICAI aligned pairs file under a tight budget and checks what must hold
whatever the small model writes: a valid published version whose front matter carries principles
with held-out numbers, measured evidence, the gate's numbers and the cost. Never asserts wording.

Skips without the `local` extra unless SPECLEARN_REQUIRE_REAL_MODEL=1 (then it fails instead).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from compiler.pairs_file import dataset_from_pairs
from compiler.runner import Context, compile_spec
from compiler.settings import CompilerSettings
from conftest import REAL_MODEL as MODEL
from helpers import ICAI_ALIGNED
from proxy import local_model as lm
from proxy.registry import FileRegistry
from proxy.registry.specfile import body_sha256, parse
from proxy.settings import Settings

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(300)]


ALIGNED = ICAI_ALIGNED


@pytest.fixture
def base_url(model: lm.LocalModelSupervisor) -> str:
    return model.base_url


def tight_settings(base_url: str, tmp_path: Path) -> CompilerSettings:
    return CompilerSettings(
        base_url=base_url, model=MODEL, seed=7, timeout=90, retries=1, concurrency=4,
        max_llm_calls=60, max_tokens=40_000,
        proposal_passes=2, proposal_sample=8, propose_max_tokens=96, synth_max_tokens=256,
        max_candidates=8, validation_pairs=4, calibration_pairs=4, calibration_open=4, gate_pairs=4,
        cache_dir=tmp_path / "cache",
    )  # fmt: skip


async def test_compile_from_pairs_with_the_local_model(base_url: str, tmp_path: Path) -> None:
    settings = Settings(specs_dir=tmp_path / "specs", data_dir=tmp_path / "data")
    registry = FileRegistry(settings.specs_dir, poll_interval=0)
    await registry.set_instruction("icai", "You are a helpful assistant.\n")
    ctx = Context(settings, tight_settings(base_url, tmp_path), registry)
    dataset = dataset_from_pairs(ALIGNED, 0.3, seed=7)

    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"{time.monotonic() - started:6.1f}s {message}")

    result = await compile_spec(ctx, "icai", dataset=dataset, force=True, record_state=False, progress=progress)
    wall = time.monotonic() - started
    print(f"real compile: {result.cost} in {wall:.1f}s; gate {result.gate.to_meta() if result.gate else None}")

    assert result.result == "published", result.reason
    assert result.projection is not None and result.cost["llm_calls"] <= 60

    path = settings.specs_dir / "icai/versions/0001.md"
    meta, text = parse(path.read_text())
    assert meta["sha256"] == body_sha256(text) and meta["author"] == "compiler"
    await registry.refresh()
    assert registry.snapshot.get("icai").resolve("candidate").version == 1
    assert "You are a helpful assistant." in text  # the instruction survives any synthesis, verbatim
    principles = meta["principles"]
    assert principles, "no principle survived validation"
    for p in principles:
        assert p["heldout"] > 0 and p["relevant"] > 0 and p["accuracy"] >= 0.55
    measured = [p for p in principles if p.get("check")]
    assert measured and all(p["evidence"]["train_relevant"] >= 3 for p in measured)
    gate = meta["gate"]
    assert {"candidate_accuracy", "current_accuracy", "heldout_pairs", "checks"} <= set(gate)
    assert meta["cost"]["llm_calls"] > 0 and meta["cost"]["tokens"] > 0
    assert meta["feedback_window"]["source"] == f"file:{ALIGNED.name}"
