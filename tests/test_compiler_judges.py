"""The judges (pairwise, pointwise, calibrated), their calibration on known answers, and the
round's choice of the first judge that passes it, recorded per principle and in front matter."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from compiler.calibration import calibration_set, shipped_items
from compiler.checks import checks_from_text
from compiler.dataset import Example, Pair
from compiler.judge import (
    Calibrated,
    CalibrationItem,
    PairwiseJudge,
    PointwiseJudge,
    calibrate,
    fit_scale,
    forced_choice,
    make_judge,
    rescale,
    verdict,
)
from compiler.llm import LLMClient
from compiler.runner import compile_spec
from tests.fake_llm import FakeLLM, fill_ledger
from tests.test_compiler_pipeline import close, make_ctx


def llm(fake: FakeLLM, model: str = "fake") -> LLMClient:
    return LLMClient("http://fake/v1", model, transport=fake.transport)


def pair(chosen: str, rejected: str, q: str = "How do I make tea?") -> Pair:
    return Pair("p", Example("c", q, chosen, 1.0), Example("r", q, rejected, -1.0), "thumbs")


def mentions_safety(criteria: str, answer: str) -> bool | None:
    return "careful" in answer.lower() if "safety" in criteria.lower() else None


async def test_pointwise_asks_each_answer_alone_and_compares() -> None:
    fake = FakeLLM(point_judge=mentions_safety, knows_calibration=False)
    judge = PointwiseJudge(llm(fake))
    p = await judge.by_rule("Mention safety.", pair("Be careful: the kettle is hot.", "Boil the water."))
    assert p == pytest.approx(0.9) and verdict(p) == 1
    asked = [c["messages"][-1]["content"] for c in fake.calls]
    assert len(asked) == 2 and all(a.startswith("TASK: check an answer against a rule") for a in asked)
    assert sum("Answer B" in a for a in asked) == 0  # no position to be biased by
    same = await judge.by_rule("Mention safety.", pair("Boil water.", "Boil the water."))
    assert same == pytest.approx(0.5) and verdict(same) == 0


async def test_pairwise_cancels_a_position_bias() -> None:
    blind = FakeLLM(judge=lambda *a: None, point_judge=None, knows_calibration=False)  # always "A"
    assert await PairwiseJudge(llm(blind)).by_rule("Be kind.", pair("x y", "y x")) == pytest.approx(0.5)


def test_the_calibration_scale_follows_how_reliable_the_margins_are() -> None:
    assert fit_scale([0.02] * 10) > 40  # small but always right: decisive after calibration
    assert fit_scale([0.02, -0.02] * 5) < 1  # noise: no opinion after calibration
    assert verdict(rescale(0.52, fit_scale([0.02] * 10))) == 1
    assert verdict(rescale(0.52, fit_scale([0.02, -0.02] * 5))) == 0
    assert fit_scale([]) == 0.0


def test_a_forced_choice_takes_the_lean_the_no_opinion_band_hides() -> None:
    assert [forced_choice(p) for p in (0.52, 0.5, 0.48)] == [1, 0, -1]
    assert [verdict(p) for p in (0.52, 0.48)] == [0, 0]


async def test_calibrated_judge_is_scored_leave_one_out() -> None:
    """A judge right on every item but one is not credited for the scale fitted on that item."""
    items = [CalibrationItem("Mention safety.", pair("Be careful with it.", "Use it."), "open")] * 5
    items.append(CalibrationItem("Mention safety.", pair("Use it.", "Be careful with it."), "open"))
    judge = Calibrated(PointwiseJudge(llm(FakeLLM(point_judge=mentions_safety, knows_calibration=False))))
    cal = await calibrate(judge, items, passes=lambda a, n: a >= n - 1)
    assert (cal.agree, cal.n, cal.trusted) == (5, 6, True) and cal.by_kind == {"open": (5, 6)}
    assert judge.scale == cal.scale and judge.scale > 1
    assert judge.name == "fake/pointwise+calibrated"


def test_make_judge_knows_its_kinds() -> None:
    client = llm(FakeLLM())
    assert isinstance(make_judge("pairwise", client), PairwiseJudge)
    assert isinstance(make_judge("pointwise+calibrated", client), Calibrated)
    with pytest.raises(ValueError, match="unknown judge"):
        make_judge("majority", client)


def test_shipped_calibration_items_are_what_they_claim() -> None:
    """Open items state rules no built-in check reads; menu items' checks decide them; about
    half of the preferred open answers are the shorter one, so length alone cannot pass."""
    items = shipped_items()
    open_ = [i for i in items if i.kind == "open"]
    menu = [i for i in items if i.kind == "menu"]
    assert len(open_) >= 20 and len({i.rule for i in open_}) >= 10 and len(menu) >= 5
    assert all(not checks_from_text(i.rule) for i in open_)
    for i in menu:
        (check,) = checks_from_text(i.rule)
        assert check.test(i.pair.chosen.response) and not check.test(i.pair.rejected.response), i.rule
    shorter = sum(len(i.pair.chosen.response) < len(i.pair.rejected.response) for i in open_)
    assert 0.35 <= shorter / len(open_) <= 0.65
    picked = calibration_set([], [], menu=3, open_=5, seed=1)
    assert [i.kind for i in picked] == ["menu"] * 3 + ["open"] * 5
    assert calibration_set([], [], menu=3, open_=5, seed=2) != picked  # rounds ask different ones


# -- the round's choice of judge -------------------------------------------------------------
async def test_the_round_uses_the_judge_model_that_passes_calibration(tmp_path: Path) -> None:
    """The compiler's own model is blind; the judge model sees: calibration trusts the judge
    model, which then validates the rules no check expresses and gates; proposals stay on the
    compiler's model. Which judge validated what is in the report and the front matter."""
    blind = FakeLLM(judge=lambda *a: None, point_judge=None, knows_calibration=False)
    seeing = FakeLLM()

    def by_model(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        status, payload = (seeing if body["model"] == "judge-1.5b" else blind).respond(body)
        return httpx.Response(status, json=payload)

    ctx = await make_ctx(tmp_path, blind, judge_model="judge-1.5b")
    ctx.transport = httpx.MockTransport(by_model)
    result = await compile_spec(ctx, "support")
    await close(ctx)
    assert result.calibration is not None and result.calibration["trusted"]
    chosen = result.calibration["chosen"]["judge"]
    assert chosen.startswith("judge-1.5b/") and chosen.endswith("+calibrated")
    assert blind.count("propose rules") > 0 and seeing.count("propose rules") == 0
    assert blind.count("judge by") == blind.count("check an answer") == 0  # the compiler's model never judged
    assert seeing.count("check an answer against a rule") > 0
    judged = [p for p in result.candidates if p.measured.method == "judge"]
    assert judged and all(p.measured.judge.startswith(f"{chosen}, calibration ") for p in judged)
    assert result.result == "published" and result.version is not None, result.reason
    meta = result.version.meta
    assert meta["gate"]["judge_calibration"]["chosen"]["judge"] == chosen
    assert any(p.get("judge", "").startswith("judge-1.5b") for p in meta["principles"])


async def test_with_no_judge_passing_calibration_every_kind_was_tried(tmp_path: Path) -> None:
    blind = FakeLLM(judge=lambda *a: None, point_judge=None, knows_calibration=False)
    ctx = await make_ctx(tmp_path, blind)
    result = await compile_spec(ctx, "support")
    await close(ctx)
    assert result.calibration is not None and not result.calibration["trusted"]
    assert [c["judge"] for c in result.calibration["tried"]] == ["m/pointwise+calibrated"]  # the model of the traffic
    assert all(p.measured.method != "judge" for p in result.candidates)


async def test_a_ledger_with_a_taste_still_publishes(tmp_path: Path) -> None:
    """The significance gate lets a real taste through: the 40-event fixture publishes."""
    await fill_ledger(tmp_path / "again.db")
    ctx = await make_ctx(tmp_path, FakeLLM())
    result = await compile_spec(ctx, "support")
    await close(ctx)
    assert result.result == "published", result.reason
    assert result.gate is not None and result.gate.p_value <= result.gate.alpha


def test_trust_needs_a_judge_significantly_better_than_a_coin() -> None:
    from compiler.judge import trusted

    assert trusted(10, 12, 0.67) and not trusted(9, 12, 0.67)  # 0.75 is not enough on 12 items
    assert trusted(12, 16, 0.67) and not trusted(3, 3, 0.67)  # 3/3 could be luck
    assert not trusted(0, 0, 0.0)
