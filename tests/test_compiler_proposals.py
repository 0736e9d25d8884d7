"""A learned rule that contradicts the person's text is a proposal held for a person, never an edit."""

from __future__ import annotations

from pathlib import Path

from compiler.checks import Check
from compiler.principle import Principle, Rule, Source
from compiler.proposals import contradicts, find_proposals
from compiler.runner import compile_spec
from proxy.registry.sections import split_spec
from tests.fake_llm import FakeLLM
from tests.test_compiler_pipeline import close, make_ctx

PROMPT = """# ACME support

## Style
- Greet the customer by name.
- Keep answers under 200 words.

## Escalation
1. Offer a refund link for damaged goods.
2. Hand over to a human when the customer asks twice.
"""


def test_contradiction_is_a_different_setting_or_the_negation() -> None:
    assert contradicts(Check("max_words", "20"), Check("max_words", "200"))
    assert contradicts(Check("no_list"), Check("list")) and contradicts(
        Check("forbid", "sorry"), Check("contains", "sorry")
    )
    assert contradicts(Check("in_language", "fr"), Check("language", "en"))
    assert contradicts(Check("min_words", "300"), Check("max_words", "200"))
    assert not contradicts(Check("min_words", "50"), Check("max_words", "200"))  # both can hold
    assert not contradicts(Check("max_words", "20"), Check("max_words", "20"))
    assert not contradicts(Check("max_words", "20"), Check("no_list"))
    assert not contradicts(Check("max_words", "20", "refund"), Check("max_words", "200"))  # another scope


def test_find_proposals_pairs_a_rule_with_the_persons_sentence() -> None:
    short = Principle(Rule("Answer in at most 20 words.", Source.EVIDENCE, Check("max_words", "20")))
    kind = Principle(Rule("Be kind.", Source.LLM))
    keep, proposals = find_proposals([short, kind], PROMPT)
    assert keep == [kind] and [(p.sentence, p.rule) for p in proposals] == [("Keep answers under 200 words.", short)]
    edited = proposals[0].apply(PROMPT)
    assert "- Answer in at most 20 words.\n" in edited and "200 words" not in edited
    assert edited.replace("Answer in at most 20 words.", "Keep answers under 200 words.") == PROMPT


async def test_a_contradicting_rule_is_held_for_a_person_and_the_prompt_stays_served(tmp_path: Path) -> None:
    """The round's feedback prefers answers of at most 20 words; the person wrote "under 200"."""
    ctx = await make_ctx(tmp_path, FakeLLM(), seed=11)
    await ctx.registry.publish("support", PROMPT, labels=["production"])  # the team's own prompt, v2
    result = await compile_spec(ctx, "support")
    await close(ctx)
    assert [p.sentence for p in result.proposals] == ["Keep answers under 200 words."]
    assert [p.rule.check for p in result.proposals] == [Check("max_words", "20")]
    assert len(result.held) == 1
    held = result.held[0]
    await ctx.registry.refresh()
    state = ctx.registry.snapshot.get("support")
    assert state.blocked(held.version) and state.resolve(None).text == PROMPT  # never served before approval
    assert held.meta["held_for"] == "proposal" and held.meta["proposal"]["replaces"] == "Keep answers under 200 words."
    human, learned = split_spec(held.text)
    assert (
        human
        == PROMPT.replace("Keep answers under 200 words.", "Answer in one short sentence of at most 20 words.").rstrip()
    )
    assert "20 words" not in learned  # the rule replaces the sentence, it is not said twice
    # without the contradicting rule the candidate explains too little here: nothing else is served
    assert result.result != "published" and result.reason.endswith(
        "1 proposal(s) to change the person's text await approval"
    )
    # the next round over the same evidence proposes nothing new
    ctx = await make_ctx(tmp_path, FakeLLM(), seed=11)
    again = await compile_spec(ctx, "support")
    await close(ctx)
    assert [p.sentence for p in again.proposals] == ["Keep answers under 200 words."] and again.held == []


async def test_approving_a_proposal_serves_the_edited_prompt(tmp_path: Path) -> None:
    ctx = await make_ctx(tmp_path, FakeLLM(), seed=11)
    await ctx.registry.publish("support", PROMPT, labels=["production"])
    result = await compile_spec(ctx, "support", label="production")
    await close(ctx)
    held = result.held[0]
    await ctx.registry.decide_hold("support", held.version, approve=True)
    await ctx.registry.refresh()
    served = ctx.registry.snapshot.get("support").resolve(None)
    assert served.version == held.version and "at most 20 words" in served.text and "200 words" not in served.text


def test_the_diff_keeps_list_markers_and_splits_prose_into_sentences() -> None:
    from compiler.publish import diff

    old = PROMPT
    new = old.rstrip("\n") + "\n\n## Learned from feedback\n\n- Be kind. Be brief.\n"
    lines = diff(old, new, "v1", "v2").splitlines()
    assert " 2. Hand over to a human when the customer asks twice." in lines  # context keeps its marker
    assert [ln for ln in lines if ln.startswith("+") and not ln.startswith("+++")] == [
        "+## Learned from feedback",
        "+- Be kind. Be brief.",
    ]
    prose = diff("You help. Be thorough.", "You help. Be brief.").splitlines()
    assert "-Be thorough." in prose and "+Be brief." in prose and " You help." in prose


def test_a_negated_list_instruction_in_the_persons_words_is_read_and_proposed_against() -> None:
    """A real support prompt says "use prose, and never create bulleted lists"; users who want
    bullets get a proposal, never a list rule beside the person's sentence (and the comment
    "never create bulleted lists" asks for no list, not for one)."""
    from compiler.checks import check_of_comment, checks_from_text

    sentence = (
        "The message is for a voice conversation, so be very concise, use prose, and never create bulleted lists."
    )
    assert checks_from_text(sentence) == [Check("no_list")]
    assert check_of_comment("never create bulleted lists") == (Check("no_list"), "")
    bullets = Principle(Rule("Format answers as a bulleted list.", Source.EVIDENCE, Check("list")))
    keep, proposals = find_proposals([bullets], f"# NewTelco\n\n- {sentence}\n")
    assert keep == [] and [p.sentence for p in proposals] == [sentence]
