"""The check language (compiler/checks.py): parsing is validation, structure and phrase predicates,
and principles learned beyond the built-in menu carry a check. Every kind on its own:
tests/test_check_kinds.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from compiler.checks import Check, CheckSyntaxError, checks_from_text, sentence_count
from compiler.dataset import Example, Pair, Split
from compiler.evidence import find_evidence
from compiler.principle import llm_rule
from compiler.text import parse_rules
from compiler.validate import family, select, validate
from tests.fake_llm import QUESTIONS


@pytest.mark.parametrize("raw, message", [
    ("shout", "unknown check kind"),
    ("max_words:many", "whole number"),
    ("max_words:0", "whole number"),
    ("language:klingon", "one of"),
    ("contains:", "needs an argument"),
    ("numbered:3", "takes no argument"),
    ("contains_any:" + "|".join(f"p{i}" for i in range(9)), "1 to 8 phrases"),
    ("not:numbered", "not: applies to"),
    ("contains:" + " ".join(["word"] * 9), "1 to 8 words"),
])  # fmt: skip
def test_malformed_checks_are_refused_with_the_reason(raw: str, message: str) -> None:
    with pytest.raises(CheckSyntaxError, match=message):
        Check.parse(raw)


def test_negation_is_sugar_for_the_negative_kinds() -> None:
    assert Check.parse("not:contains:Certainly") == Check("forbid", "certainly")
    assert Check.parse("not:list") == Check("no_list")
    assert Check.parse("NOT:question") == Check("no_question")


def test_structure_and_phrase_predicates() -> None:
    steps = "To make tea:\n1. Boil water.\n2. Add the tea bag.\n3. Wait three minutes."
    assert Check("numbered").test(steps) and not Check("numbered").test("- one\n- two")
    assert Check("headings").test("## Steps\nBoil water.") and Check("headings").test("**Summary**\nIt works.")
    assert not Check("headings").test("It is #1 in sales and **very** good.")
    assert sentence_count("One. Two! Three? Four") == 4 and sentence_count("Dr. Who is here.") == 2
    assert Check("max_sentences", "2").test("It is blue. It is big.")
    assert not Check("max_sentences", "2").test("It is blue. It is big. It is old.")
    anyof = Check.parse("contains_any:for example|for instance")
    assert anyof.test("Cats purr, for instance when fed.") and not anyof.test("Cats purr.")
    assert not Check("contains", "next step").test("The next steps are easy.")  # whole phrase only


# -- an LLM's rule with a check it attached ----------------------------------------------------
def test_parse_rules_keeps_an_attached_check_with_its_rule() -> None:
    text = "- Give an example [check: contains_any:for example|for instance]\n- Be kind to users."
    assert parse_rules(text) == ["Give an example. [check: contains_any:for example|for instance]",
                                 "Be kind to users."]  # fmt: skip


def test_an_attached_check_gives_the_rule_words_that_read_back() -> None:
    p = llm_rule("Give an example. [check: contains_any:for example|for instance]", ["p1"])
    assert p.check == Check("contains_any", "for example|for instance")
    assert p.check in checks_from_text(p.text)  # the spec will state what was validated
    assert p.evidence["proposed_as"] == "Give an example."
    kept = llm_rule('Never say "Certainly". [check: forbid:certainly]', [])
    assert kept.text == 'Never say "Certainly".' and "proposed_as" not in kept.evidence


def test_a_malformed_attached_check_is_reported_and_never_used() -> None:
    p = llm_rule("Be warm. [check: import os; os.system('x')]", [])
    assert p.check is None and p.text == "Be warm."
    assert "unknown check kind" in p.evidence["check_error"]


# -- evidence beyond the menu -------------------------------------------------------------------
def _pairs(chosen: str, rejected: str, n: int = 8) -> list[Pair]:
    return [
        Pair(f"p{i}", Example(f"c{i}", q, chosen.format(q=q.rstrip("?")), 1.0, float(i)),
             Example(f"r{i}", q, rejected.format(q=q.rstrip("?")), -1.0, float(i)), "thumbs")
        for i, q in enumerate(QUESTIONS[:n])
    ]  # fmt: skip


def test_evidence_finds_a_phrase_only_preferred_answers_use() -> None:
    found, report = find_evidence(Split(pairs=_pairs("It depends. For example, {q}.", "It depends. {q}.")))
    checks = {str(p.check) for p in found}
    assert "contains:for example" in checks, report["measured"]
    assert not any(c.startswith("forbid:") for c in checks)


def test_evidence_prefers_the_phrase_the_other_side_never_says() -> None:
    """Every disliked answer says "Here are", a liked one says "here is": "here" and "here are"
    cover the same disliked answers, and only "here are" separates them from the liked ones."""
    words = ("ideas", "tips", "steps", "facts")
    pairs = [Pair(p.id, replace(p.chosen, response=("Here is one: " if i == 0 else "Some: ") + p.chosen.response),
                  replace(p.rejected, response=f"Here are {words[i % 4]}: " + p.rejected.response), "thumbs")
             for i, p in enumerate(_pairs("rest and {q}.", "rest and {q}."))]  # fmt: skip
    found, report = find_evidence(Split(pairs=pairs))
    assert "forbid:here are" in {str(p.check) for p in found}, report["measured"]
    assert "forbid:here" not in {str(p.check) for p in found}


def test_evidence_finds_numbered_steps() -> None:
    found, _ = find_evidence(Split(pairs=_pairs(
        "For {q}:\n1. Start small.\n2. Practice daily.\n3. Review weekly.",
        "For {q}, start small, practice daily and review weekly.",
    )))  # fmt: skip
    assert "numbered" in {str(p.check) for p in found}


async def test_a_required_phrase_is_its_own_family_and_validates_on_held_out_pairs() -> None:
    heldout = _pairs("Yes. For instance, {q} is fine.", "Yes, {q} is fine.", n=6)
    rule = llm_rule("Give an example. [check: contains_any:for example|for instance]", [])
    numbered = llm_rule("Use steps. [check: numbered]", [])
    phrase, steps = await validate([rule, numbered], heldout, None, max_pairs=6)
    assert (phrase.measured.method, phrase.measured.relevant, phrase.measured.support) == ("check", 6, 6)
    assert family(numbered) == "list" and family(rule) == str(rule.check)
    kept = select([phrase, steps], top_k=4, min_accuracy=0.55, min_prevalence=0.1).kept
    assert [p.rule for p in kept] == [rule] and kept[0].status == "added"


# -- checks scoped to the questions that mention a phrase (every kind: tests/test_check_kinds.py)
def test_a_scoped_check_asks_nothing_of_answers_to_other_questions() -> None:
    blue = Check.parse("when:t-shirt;contains:blue")
    assert blue.test("Take the blue one.", "Which t-shirt should I buy?")
    assert not blue.test("Take the green one.", "Which t-shirt should I buy?")
    assert blue.test("Lemon, always.", "Which ice cream should I pick?")  # not its question
    assert blue.passes(Example("e", "Which T-shirt, then?", "Green.", 1.0)) is False
    with pytest.raises(ValueError, match="needs the question"):
        blue.test("Take the blue one.")  # a caller that forgot the question fails loudly
    with pytest.raises(CheckSyntaxError, match="when: needs a phrase and ';'"):
        Check.parse("when:t-shirt contains:blue")
    long_scope = 'When the question mentions "' + "very " * 9 + 'long", never use the phrase "sure".'
    assert checks_from_text(long_scope) == []  # not a scope the language has: no check, no crash
    from compiler.gate import pair_score

    other = Pair(
        "o", Example("c", "Which ice cream?", "Lemon.", 1.0), Example("r", "Which ice cream?", "Blue.", -1.0), "thumbs"
    )
    shirt = Pair(
        "s",
        Example("c", "Which t-shirt?", "The blue.", 1.0),
        Example("r", "Which t-shirt?", "The green.", -1.0),
        "thumbs",
    )
    assert (pair_score([blue], other), pair_score([blue], shirt)) == (0.5, 1.0)


def test_a_proposed_check_requiring_a_phrase_no_answer_wrote_is_refused() -> None:
    """The small proposer copies the prompt's placeholder into a check: it is refused, reported,
    and the rule keeps the LLM's words; a phrase the answers do use is kept."""
    from compiler.propose import only_written_phrases

    answers = ["It depends. For example, rest helps.", "Sleep more."]
    copied = only_written_phrases(
        llm_rule("Use clear wording. [check: contains_any:phrase one|phrase two]", []), answers
    )
    assert copied.check is None and copied.text == "Use clear wording."
    assert "requires a phrase no answer has used" in copied.evidence["check_error"]
    kept = only_written_phrases(llm_rule("Give an example. [check: contains:for example]", []), answers)
    assert kept.check == Check("contains", "for example") and "check_error" not in kept.evidence
    avoid = only_written_phrases(llm_rule('Never say "Certainly". [check: forbid:certainly]', []), answers)
    assert avoid.check == Check("forbid", "certainly")  # a phrase to avoid needs no answer to have used it
