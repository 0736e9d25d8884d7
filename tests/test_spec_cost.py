"""What a spec costs: the tokens it adds to every request, in the report, the front matter and a
Prometheus gauge set on registry reload, and the length budget the synthesizer keeps."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

from compiler import report
from compiler.checks import Check
from compiler.llm import LLMClient, estimate_tokens
from compiler.principle import Rule, Source
from compiler.runner import compile_spec
from compiler.synthesize import Synthesis, spec_tokens, synthesize, within_budget
from proxy import metrics
from proxy.registry.base import RegistrySnapshot, SpecState, SpecVersion
from proxy.registry.sections import compose
from proxy.registry.specfile import parse
from tests.fake_llm import FakeLLM, default_persona
from tests.test_compiler_pipeline import INSTRUCTION, close, make_ctx

RULES = [Rule("Answer in at most 20 words.", Source.EVIDENCE, Check("max_words", "20")),
         Rule('Never use the phrase "I guess".', Source.LLM),
         Rule("Be friendly and enthusiastic.", Source.LLM)]  # fmt: skip


def test_a_spec_within_its_budget_is_kept() -> None:
    synth = Synthesis("You help. " * 10, "llm")
    assert within_budget(synth, "You help.", RULES, 600) is synth and synth.tokens == estimate_tokens(synth.text)
    assert spec_tokens("   ") == 0


def test_over_budget_the_learned_section_drops_the_lowest_ranked_rules() -> None:
    long = Synthesis(compose(INSTRUCTION, "You are a wonderful assistant. " * 100), "llm")
    listed = within_budget(long, INSTRUCTION, RULES, 10_000 // 20)
    assert listed.method == "sections" and all(p.text in listed.text for p in RULES)
    assert listed.repairs == [f"learned section of ~{long.learned_tokens} tokens is over the budget of 500"]
    budget = spec_tokens(f"- {RULES[0].text}") + 1
    tight = within_budget(long, INSTRUCTION, RULES, budget)
    assert tight.method == "sections" and not tight.rejected and tight.learned_tokens <= budget
    assert RULES[0].text in tight.text and RULES[2].text not in tight.text  # best first: the last go
    assert [r for r in tight.repairs if r.startswith("dropped")] == [
        f"dropped to fit the length budget: {RULES[2].text}",
        f"dropped to fit the length budget: {RULES[1].text}",
    ]


def test_a_long_human_part_is_served_whole_and_only_the_learned_section_is_budgeted() -> None:
    production_prompt = "# Support\n\n" + "- Be precise about refunds and delivery times.\n" * 300
    synth = within_budget(Synthesis(compose(production_prompt, "- Be kind."), "sections"), production_prompt, RULES, 50)
    assert synth.tokens > 50 and not synth.rejected and synth.text.startswith(production_prompt)
    nothing_fits = within_budget(Synthesis(compose("Help.", "- " + "x " * 400), "sections"), "Help.", RULES, 3)
    assert nothing_fits.rejected.startswith("no learned rule fits the learned section's length budget of 3 tokens")


async def test_synthesize_keeps_the_budget() -> None:
    fake = FakeLLM(persona=default_persona)
    async with LLMClient("http://fake/v1", "m", transport=fake.transport) as llm:
        free = await synthesize(INSTRUCTION, RULES, llm, fmt="persona")
        capped = await synthesize(INSTRUCTION, RULES, llm, fmt="persona", max_spec_tokens=free.learned_tokens - 1)
    assert free.method == "llm" and capped.method == "sections" and capped.learned_tokens < free.learned_tokens


async def test_round_reports_and_records_the_spec_tokens(tmp_path: Path) -> None:
    ctx = await make_ctx(tmp_path, FakeLLM(), seed=11)
    result = await compile_spec(ctx, "support")
    await close(ctx)
    assert result.result == "published", result.reason
    assert result.synthesis is not None and result.candidate_text is not None
    tokens = spec_tokens(result.candidate_text)
    meta, _ = parse((tmp_path / "specs/support/versions/0002.md").read_text())
    assert meta["spec_tokens"] == tokens == result.synthesis.tokens
    assert f"spec cost: ~{tokens} tokens added to every request" in report.summary(result)


async def test_a_budget_nothing_fits_skips_the_round(tmp_path: Path) -> None:
    ctx = await make_ctx(tmp_path, FakeLLM(), seed=11, max_spec_tokens=5)
    result = await compile_spec(ctx, "support")
    await close(ctx)
    assert (
        result.result == "skipped"
        and "no learned rule fits the learned section's length budget of 5 tokens" in result.reason
    )
    assert result.gate is None and result.version is None


def gauge(spec: str, version: str) -> float | None:
    return REGISTRY.get_sample_value("speclearn_spec_tokens", {"spec": spec, "version": version})


def version(n: int, text: str, **meta: object) -> SpecVersion:
    return SpecVersion("costs", n, text, "sha", dict(meta))


def test_gauge_follows_the_served_versions_on_reload() -> None:
    v1, v2, v3 = version(1, "x" * 40), version(2, "y" * 400, spec_tokens=77), version(3, "z" * 8)
    metrics.follow_registry(RegistrySnapshot({"costs": SpecState("costs", {1: v1, 2: v2, 3: v3}, {"production": 1})}))
    assert (gauge("costs", "1"), gauge("costs", "2"), gauge("costs", "3")) == (11.0, None, 3.0)  # labelled + latest
    metrics.follow_registry(RegistrySnapshot({"costs": SpecState("costs", {1: v1, 2: v2}, {"production": 2})}))
    assert (gauge("costs", "1"), gauge("costs", "2"), gauge("costs", "3")) == (None, 77.0, None)  # front matter wins
