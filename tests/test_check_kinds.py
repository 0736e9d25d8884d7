"""Every check kind of the registry (compiler/checks.py KINDS) on its own: its canonical words
read back as the same check, alone and scoped; a typical comment asks for it; its test tells a
passing answer from a failing one; a spec that states it covers the rule. A kind added to the
registry without its examples here fails the first test; `no_emoji`, the kind added with the
registry, shows that nothing else has to change."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from compiler import checks
from compiler.checks import KINDS, Check, check_of_comment, check_text, checks_from_text, stated
from compiler.dataset import Example, Pair, Split
from compiler.evidence import comment_principles, find_evidence
from compiler.principle import Rule, Source, llm_rule
from compiler.prompts import CHECK_MENU
from compiler.synthesize import covers
from compiler.validate import family
from tests.fake_llm import QUESTIONS

ROOT = Path(__file__).resolve().parent.parent
ENGLISH = "The capital of Italy is Rome, and it is a very old city with a lot of history."
FRENCH = "La capitale de l'Italie est Rome, et c'est une ville très ancienne pour les touristes."
GERMAN = "Die Hauptstadt von Italien ist Rom, und es ist eine sehr alte Stadt mit viel Geschichte."
LONG = " ".join(["Rome is old and full of history."] * 8)


@dataclass(frozen=True)
class Said:
    """A kind's examples: an argument, a comment asking for it, an answer that follows it and
    one that does not."""

    arg: str
    comment: str
    passing: str
    failing: str


EXAMPLES = {
    "forbid": Said("i guess", "don't say 'I guess'", "It is blue.", "I guess it is blue."),
    "ends_with": Said("hope this helps", "please end with 'Hope this helps!'", "It is blue. Hope this helps!",
                      "Hope this helps! It is blue."),
    "starts_with": Said("of course", "start with 'Of course'", "Of course, it is blue.", "It is blue, of course."),
    "language": Said("fr", "please answer in French", FRENCH, ENGLISH),
    "in_language": Said("de", "answer in German please", GERMAN, "Ok."),
    "max_words": Said("12", "too long, keep it under 12 words", "It is blue.", LONG),
    "no_list": Said("", "no bullet points please", "Rome is old.", "- Rome\n- Paris"),
    "list": Said("", "please use bullet points", "- Rome\n- Paris", "Rome is old."),
    "question": Said("", "end by asking me something", "Rome is old. Want more?", "Rome is old."),
    "no_question": Said("", "stop ending every answer with a question", "Rome is old.", "Rome is old. Want more?"),
    "min_words": Said("40", "too short, I want at least 40 words", LONG, "Rome is old."),
    "max_sentences": Said("3", "no more than 3 sentences please", "Rome is old. It is big.", "One. Two. Three. Four."),
    "min_sentences": Said("2", "one line is not enough, at least 2 sentences", "Rome is old. It is big.", "Rome is old."),
    "numbered": Said("", "please use numbered steps", "1. Boil water.\n2. Add tea.", "- Boil water.\n- Add tea."),
    "headings": Said("", "add some headings, it's a wall of text", "## Steps\nBoil water.", "Boil water."),
    "contains_any": Said("for example|for instance|e g", 'please use either "for example", "for instance" or "e.g."',
                         "Rome is old, for instance its forum.", "Rome is old."),
    "contains": Said("next step", 'please include "next step"', "The next step is easy.", "The next steps are easy."),
    "no_emoji": Said("", "stop using emojis", "Great question! Rome is old.", "Great question! 🏛️ Rome is old."),
}  # fmt: skip


def parsed(kind: str, scope: str = "") -> Check:
    arg = EXAMPLES[kind].arg
    body = f"{kind}:{arg}" if arg else kind
    return Check.parse(f"when:{scope};{body}" if scope else body)


def test_every_kind_has_its_examples() -> None:
    assert set(EXAMPLES) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_a_kind_round_trips_through_words_and_comments(kind: str) -> None:
    said, check = EXAMPLES[kind], parsed(kind)
    assert Check.parse(str(check)) == check
    words = check_text(check)
    # words -> read back -> the same check, and nothing else (in_language is stated as language)
    assert checks_from_text(f"You are a helpful assistant. {words}") == [stated(check)], words
    # a typical comment -> the check
    asked = check_of_comment(said.comment)
    assert asked is not None and asked[0] == stated(check), said.comment
    # the test tells the two answers apart
    assert check.test(said.passing) and not check.test(said.failing)
    # a spec that states the rule covers it; one that does not, does not
    rule = Rule(words, Source.EVIDENCE, check)
    assert covers(f"You are a helpful assistant. {words}", rule) and not covers("You are a helpful assistant.", rule)


@pytest.mark.parametrize("kind", KINDS)
def test_a_scoped_check_of_every_kind_reads_back_with_its_scope(kind: str) -> None:
    check = parsed(kind, scope="T-shirt")
    assert check.scope == "t shirt" and Check.parse(str(check)) == check
    words = check_text(check)
    assert words.startswith('When the question mentions "t shirt", ')
    found = checks_from_text(f'You are a helpful assistant. {words} Never use the phrase "sure".')
    assert stated(check) in found and Check("forbid", "sure") in found, words
    assert all(c.scope in ("", "t shirt") for c in found)  # the scope binds its own sentence only


@pytest.mark.parametrize("kind", [k for k in KINDS if KINDS[k].negation])
def test_not_turns_a_kind_into_its_negation(kind: str) -> None:
    said, negation = EXAMPLES[kind], KINDS[kind].negation
    negated = Check.parse(f"not:{kind}:{said.arg}" if said.arg else f"not:{kind}")
    assert negated == Check(negation, said.arg) and KINDS[negation].negation == kind
    assert negated.test(said.failing) and not negated.test(said.passing)


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("Do not end your answer with a question.", "no_question"),
        ("Never end with a question.", "no_question"),
        ("End with a question.", "question"),
        ("Do not use numbered steps.", None),
        ('Never include the phrase "sure".', "forbid:sure"),
    ],
)
def test_a_negated_sentence_reads_as_the_negative_kind_or_nothing(text: str, check: str | None) -> None:
    assert [str(c) for c in checks_from_text(text)] == ([check] if check else [])


@pytest.mark.parametrize(
    ("comment", "check"),
    [
        ("please don't end with a question", "no_question"),
        ("no more numbered steps", None),
        ("you keep saying 'basically'", None),  # a complaint about a phrase asks for no phrase
        ("don't mention 'refund'", None),
        ("give me an example", None),  # no quoted phrase: the wish goes to the LLM (compiler/wishes.py)
        ("tell me why", None),
    ],
)
def test_a_negated_or_vague_comment_asks_for_no_positive_kind(comment: str, check: str | None) -> None:
    found = check_of_comment(comment)
    assert (str(found[0]) if found else None) == check


def test_the_llm_menu_is_derived_and_unchanged() -> None:
    """The proposer's and the wish translator's prompts list the same checks in the same order
    as before the registry: the real-model benchmarks were measured with this text."""
    assert CHECK_MENU == (
        "[check: contains_any:phrase one|phrase two], [check: contains:phrase], [check: forbid:phrase], "
        "[check: max_words:N], [check: max_sentences:N], [check: numbered], [check: headings], "
        "[check: list], [check: no_list], [check: question]"
    )


def test_an_inconsistent_registry_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert checks._registry_errors() == []
    monkeypatch.setitem(KINDS, "bad", replace(KINDS["list"], name="bad", negation="no_such_kind", menu=8))
    errors = checks._registry_errors()
    assert "bad.negation = 'no_such_kind' is not a kind" in errors
    assert "two kinds share a place in the LLM's menu" in errors


def test_the_rule_language_imports_no_storage_and_no_metrics() -> None:
    code = ("import sys, compiler.checks, compiler.text; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('proxy', 'prometheus_client', 'httpx') "
            "or 'ledger' in m or m in ('compiler.dataset', 'compiler.llm', 'compiler.metrics')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# -- the kind added with the registry: one entry in compiler/checks.py, nothing else -----------
def _pairs(chosen: str, rejected: str) -> list[Pair]:
    return [
        Pair(f"p{i}", Example(f"c{i}", q, chosen.format(q=q.rstrip("?")), 1.0, float(i)),
             Example(f"r{i}", q, rejected.format(q=q.rstrip("?")), -1.0, float(i)), "thumbs")
        for i, q in enumerate(QUESTIONS[:8])
    ]  # fmt: skip


def test_no_emoji_is_named_only_by_the_registry() -> None:
    naming = [p.name for p in (ROOT / "compiler").rglob("*.py") if "no_emoji" in p.read_text()]
    assert naming == ["checks.py"]


def test_every_stage_learns_no_emoji_without_code_of_its_own() -> None:
    # evidence measures it: every kind without an argument is a candidate
    found, report = find_evidence(Split(pairs=_pairs("Good point: {q}.", "Good point 🎉: {q}. 🚀")))
    assert "no_emoji" in {str(p.check) for p in found}, report["measured"]
    # comments ask for it, from two users
    downs = [Example(f"d{i}", "q", "Sure 😀 Rome.", -1.0, float(i), "too many emojis", f"u{i}") for i in range(2)]
    (asked,), _ = comment_principles(downs, min_users=2)
    assert asked.check == Check("no_emoji") and asked.text == "Never use emoji."
    # the LLM may attach it, the rule's words read back, and it is a family of its own
    proposed = llm_rule("Keep it plain. [check: no_emoji]", [])
    assert proposed.check == Check("no_emoji") and proposed.check in checks_from_text(proposed.text)
    assert family(proposed) == "no_emoji"
