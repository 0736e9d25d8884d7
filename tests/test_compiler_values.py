"""The round's values: a prepared round, rules, measurements and verdicts are records written
once, in the words the front matter has always used; the gate scores the rules they hold."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import yaml

from compiler.checks import Check
from compiler.gate import Spec, run_gate
from compiler.judge import PairwiseJudge
from compiler.llm import LLMClient
from compiler.outcomes import Mode, Outcome
from compiler.pipeline import PreparedRound, Round, current_spec, stated_rules
from compiler.principle import Measurement, Method, Principle, Rule, Source, Status
from compiler.runner import ledger_dataset
from proxy.registry import SpecVersion
from proxy.registry.sections import compose
from tests.fake_llm import FakeLLM
from tests.test_compiler_gate import thumbs
from tests.test_compiler_pipeline import close, make_ctx

SHORT = Rule("Keep every answer to at most 50 words.", Source.EVIDENCE, Check("max_words", "50"), {"train_agree": 4})


def test_the_enums_are_the_words_the_front_matter_and_reports_keep() -> None:
    assert [str(o) for o in Outcome] == ["published", "held", "explored", "gate_failed", "skipped", "error"]
    assert [str(s) for s in Source] == ["current", "evidence", "comment", "llm"]
    assert {"kept", "added", "dropped", "superseded", "redundant", "unrequested", "rejected", "unvalidated"} == {
        str(s) for s in Status
    }
    assert Outcome.PUBLISHED == "published" and {Outcome.ERROR: 1}.get("error") == 1  # compared as strings
    assert str(Mode.COMMENTS) == "comments"


def test_a_principle_goes_to_front_matter_and_back_as_before() -> None:
    m = Measurement(Method.CHECK, n=10, relevant=8, support=6, users=3)
    p = Principle(SHORT, m, Status.ADDED, {"too_few_users": "x"})
    meta = p.to_meta()
    assert meta == {
        "text": SHORT.text, "source": "evidence", "status": "added", "check": "max_words:50", "method": "check",
        "support": 6, "relevant": 8, "users": 3, "heldout": 10, "accuracy": 0.75, "prevalence": 0.8,
        "evidence": {"train_agree": 4, "too_few_users": "x"},
    }  # fmt: skip
    # plain strings only: the registry writes front matter with yaml.safe_dump, which refuses subclasses
    assert yaml.safe_load(yaml.safe_dump(meta)) == meta
    back = Rule.from_meta(meta)
    assert (back.text, back.source, back.check, back.evidence) == (
        SHORT.text,
        Source.CURRENT,
        SHORT.check,
        meta["evidence"],
    )
    # a rule never validated (a wish held for a person) keeps the record it had
    assert Principle(SHORT).to_meta()["status"] == "" and Principle(SHORT).to_meta()["method"] == ""
    assert (m.accuracy, m.prevalence, m.score) == (0.75, 0.8, 0.6) and Measurement().accuracy is None


def test_a_hand_written_check_that_does_not_parse_stays_a_rule_in_words() -> None:
    rule = Rule.from_meta({"text": "Be brief.", "check": "max_words:lots", "status": "kept"})
    assert (rule.text, rule.check, rule.source) == ("Be brief.", None, Source.CURRENT)


def test_the_records_are_written_once() -> None:
    p = Principle(SHORT)
    for record, attr in ((SHORT, "text"), (p.measured, "support"), (p, "status")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, attr, None)


async def test_prepare_is_free_and_chooses_the_mode_once(tmp_path: Path) -> None:
    fake = FakeLLM()
    ctx = await make_ctx(tmp_path, fake)
    ds = await ledger_dataset(ctx, "support")
    llm = LLMClient("http://fake/v1", "m", transport=fake.transport)
    round_ = Round("support", ds, registry=ctx.registry, llm=llm, settings=ctx.compiler)
    prepared = await round_.prepare()
    await close(ctx)
    assert isinstance(prepared, PreparedRound) and prepared.mode == Mode.PAIRS
    assert fake.calls == []  # nothing spent before run
    assert prepared.current is not None and prepared.current_text == prepared.current.text
    assert not {p.id for p in prepared.val_pairs} & {p.id for p in prepared.gate_pairs}
    assert prepared.projection.calls > 0 and round_.result.projection == prepared.projection
    with pytest.raises(dataclasses.FrozenInstanceError):
        prepared.mode = Mode.COMMENTS  # type: ignore[misc]


def compiled(version: int, rules: list[Rule], **meta: object) -> SpecVersion:
    text = compose("You help.", "\n".join(f"- {r.text}" for r in rules))
    principles = [Principle(r, status=Status.ADDED).to_meta() for r in rules]
    return SpecVersion("s", version, text, "h", {"author": "compiler", "principles": principles, **meta})


def test_the_gate_reads_a_compiled_versions_rules_from_its_front_matter() -> None:
    french = Rule("Always answer in French.", Source.COMMENT, Check("in_language", "fr"))
    version = compiled(2, [SHORT, french])
    spec = current_spec(version, "ignored")
    assert spec.text == version.text and set(spec.checks) == {Check("max_words", "50"), Check("language", "fr")}
    # a rule the version wrote elsewhere (a proposal held for a person) is not one its text states
    proposal = {"replaces": "x", "with": french.text, "rule": {}}
    assert [r.text for r in stated_rules(compiled(3, [SHORT, french], proposals=[proposal])) or []] == [SHORT.text]
    # a hand-written version is read from its words, and nothing served is the person's text
    hand = SpecVersion("s", 1, "You help. Answer in at most 30 words.", "h", {})
    assert stated_rules(hand) is None and current_spec(hand, "").checks == (Check("max_words", "30"),)
    assert current_spec(None, "You help. Keep every answer to at most 40 words.").checks == (Check("max_words", "40"),)


async def test_the_gate_scores_the_rules_the_candidate_holds_not_what_its_prose_happens_to_say() -> None:
    """A persona paragraph may say more than its rules (here a word limit no rule has): the gate
    scores the candidate by the rules the round validated, and the person's text by its words."""
    text = "You help. Be warm; keep it under 12 words."
    assert Spec.read(text).checks == (Check("max_words", "12"),)
    held = Spec.of(text, "You help.", [Rule("Be warm.", Source.LLM)])
    assert held.checks == () and held.text == text
    pairs = thumbs([True] * 14, random.Random(5), like=lambda t: len(t.split()) <= 12)
    judge = PairwiseJudge(LLMClient("http://unused/v1", "x", transport=FakeLLM().transport))
    by_words = await run_gate(judge, text, "You help.", pairs, margin=0.0, use_judge=False)
    by_rules = await run_gate(judge, held, "You help.", pairs, margin=0.0, use_judge=False)
    assert by_words.passed and not by_rules.passed
    assert by_rules.checks == {"candidate": 0.5, "current": 0.5}
