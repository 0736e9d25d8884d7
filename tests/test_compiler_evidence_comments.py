"""Down-vote comments -> candidate principles with a check (no LLM): when the answers never
satisfy a wish there is nothing to contrast, and what users write is the only signal."""

from __future__ import annotations

import pytest

from compiler.checks import Check, check_of_comment, check_text, checks_from_text
from compiler.dataset import Example, Pair, Split
from compiler.evidence import comment_principles, find_evidence
from compiler.validate import select, validate

ENGLISH = "The capital of Italy is Rome, and it is a very old city with a lot of history."
FRENCH = "La capitale de l'Italie est Rome, et c'est une ville très ancienne pour les touristes."


def down(i: int, text: str, comment: str | None) -> Example:
    return Example(f"d{i}", f"question {i}", text, -1.0, float(i), comment=comment)


@pytest.mark.parametrize(
    ("comment", "check"),
    [
        ("please answer in French", "language:fr"),
        ("Réponds en français? No: I want French answers", "language:fr"),
        ("too long, keep it under 25 words", "max_words:25"),
        ("please end with 'Hope this helps!'", "ends_with:hope this helps"),
        ('Always finish with "Cheers, Bob"', "ends_with:cheers bob"),
        ("don't say 'Certainly'", "forbid:certainly"),
        ("Stop saying \u201cHere are\u201d all the time", "forbid:here are"),
        ("please use bullet points", "list"),
        ("no bullet points please", "no_list"),
        ("start with 'Hi'", "starts_with:hi"),
    ],
)
def test_a_comment_names_a_checkable_wish(comment: str, check: str) -> None:
    found = check_of_comment(comment)
    assert found is not None and str(found[0]) == check


@pytest.mark.parametrize("comment", ["too long", "meh", "wrong answer", "I don't like it"])
def test_vague_comments_name_no_check(comment: str) -> None:
    assert check_of_comment(comment) is None


def test_the_closing_line_check_and_its_text_round_trip() -> None:
    check, display = check_of_comment("please end with 'Hope this helps!'") or (None, "")
    assert check is not None and display == "Hope this helps!"
    assert check.test("Rome is the capital. Hope this helps!")
    assert not check.test("Hope this helps! Rome is the capital.")
    text = check_text(check, display)
    assert text == 'End every answer with the line "Hope this helps!".'
    assert checks_from_text(text) == [check]  # the gate can score a spec that states it


def test_recurring_comments_become_principles_only_down_votes_needed() -> None:
    examples = [down(i, ENGLISH, "please answer in French" if i % 2 == 0 else None) for i in range(8)]
    examples.append(down(9, ENGLISH, "don't say 'Certainly'"))  # said once: not recurring
    found, counts = comment_principles(examples)
    assert [str(p.check) for p in found] == ["language:fr"]
    p = found[0]
    assert p.source == "comment" and p.text == "Always answer in French."
    assert p.evidence["count"] == 4 and p.evidence["commented_answers_failing_check"] == 4
    assert counts == {"language:fr": 4, "forbid:certainly": 1}


def test_up_votes_and_their_comments_are_ignored() -> None:
    ups = [Example(f"u{i}", "q", ENGLISH, 1.0, comment="please answer in French") for i in range(3)]
    assert comment_principles(ups)[0] == []


def test_find_evidence_adds_comment_principles_once() -> None:
    # no ups at all: no contrasts, but the comments still propose the rule
    split = Split(downs=[down(i, ENGLISH, "please use bullet points") for i in range(4)])
    found, report = find_evidence(split)
    assert [(p.source, str(p.check)) for p in found] == [("comment", "list")]
    assert report["contrasts"] == 0 and report["comment_checks"] == {"list": 4}


async def test_a_comment_principle_goes_through_the_same_validation() -> None:
    train = [down(i, ENGLISH, "please answer in French") for i in range(3)]
    (principle,), _ = comment_principles(train)
    assert principle.check == Check("language", "fr")

    def pair(i: int, chosen: str, rejected: str) -> Pair:
        return Pair(f"p{i}", Example(f"c{i}", "q", chosen, 1.0), Example(f"r{i}", "q", rejected, -1.0), "thumbs")

    async def status(heldout: list[Pair]) -> str:
        measured = await validate([principle], heldout, None, max_pairs=4)
        (p,) = select(measured, top_k=4, min_accuracy=0.55, min_prevalence=0.1).candidates
        assert p.rule is principle  # validation measures the rule, it does not rewrite it
        return str(p.status)

    assert await status([pair(i, FRENCH, ENGLISH) for i in range(4)]) == "added"  # held-out users agree
    assert await status([pair(i, ENGLISH, FRENCH) for i in range(4)]) == "rejected"  # they disagree


def test_every_check_kind_survives_a_round_trip_through_front_matter() -> None:
    """A published principle's check is read back with Check.parse on the next round."""

    for raw, good, bad in [
        ("ends_with:hope this helps", "Sure. Hope this helps!", "Sure."),
        (
            "in_language:fr",
            "Bonjour, je suis très content de vous aider avec cette question.",
            "Hello, I am happy to help you.",
        ),
    ]:
        check = Check.parse(raw)
        assert str(check) == raw
        assert check.test(good) and not check.test(bad)
