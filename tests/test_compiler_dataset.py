"""Collect: joins, dedupe, caps, the time split by conversation, pairs from thumbs; pairs files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from compiler.dataset import (
    build_dataset,
    examples_from_events,
    pair_thumbs,
    prompt_text,
)
from compiler.pairs_file import (
    PairsFileError,
    dataset_from_pairs,
    read_pairs,
    split_instruction_output,
)
from helpers import ICAI
from proxy.ledger import FeedbackEvent, FeedbackRecord, InferenceRecord
from proxy.ledger.sqlite import SqliteLedger

ALIGNED = ICAI / "synthetic_data_aligned_vqvtb.csv"


def inf(id_: str, prompt: str, answer: str, at: float = 0.0, **meta: str) -> InferenceRecord:
    req = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
    return InferenceRecord(id_, at, "chat", "m", "s", 1, "h", req, answer, metadata=dict(meta))


def thumb(fid: str, inference: InferenceRecord, value: float, at: float, comment: str | None = None) -> FeedbackEvent:
    return FeedbackEvent(FeedbackRecord(fid, inference.id, "thumb", value, at, comment), inference)


def test_prompt_text_chat_and_responses() -> None:
    chat = {"messages": [{"role": "system", "content": "client sys"},
                         {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}  # fmt: skip
    assert prompt_text(chat) == "system: client sys\nuser: hi"
    assert prompt_text({"messages": [{"role": "user", "content": "just this"}]}) == "just this"
    assert prompt_text({"input": "a question", "instructions": "be nice"}) == "system: be nice\nuser: a question"
    items = {"input": [{"role": "user", "content": [{"type": "input_text", "text": "q"}]}]}
    assert prompt_text(items) == "q"


def test_later_vote_replaces_earlier_and_duplicates_count_once() -> None:
    a = inf("a", "Q?", "answer one", 1)
    b = inf("b", "Q?", "answer one", 2)  # the same answer to the same prompt
    events = [thumb("f1", a, -1, 10), thumb("f2", a, 1, 20), thumb("f3", b, 1, 30)]
    examples, pairs = examples_from_events(events)
    assert len(examples) == 1 and examples[0].up and pairs == []


def test_scores_and_explicit_pairs() -> None:
    a, b, c = inf("a", "Q?", "good"), inf("b", "Q?", "bad"), inf("c", "R?", "meh")
    events = [
        FeedbackEvent(FeedbackRecord("p", "a", "pair", 1, 5, rejected_id="b"), a, b),
        FeedbackEvent(FeedbackRecord("s1", "c", "score", 0.2, 6), c),
        FeedbackEvent(FeedbackRecord("s2", "a", "score", 4.0, 7), a),
    ]
    examples, pairs = examples_from_events(events)
    assert [(p.chosen.id, p.rejected.id, p.source) for p in pairs] == [("a", "b", "explicit")]
    assert {e.id: e.up for e in examples} == {"c": False, "a": True}


def test_thumbs_pair_on_near_identical_prompts_and_rest_stays_unpaired() -> None:
    up1 = inf("u1", "How do I reset my password?", "Click 'forgot password'.", 1)
    down1 = inf("d1", "how do I reset my password", "I guess you could try things.", 2)
    up2 = inf("u2", "What is a haiku?", "A short poem.", 3)
    down2 = inf("d2", "Name a color.", "Colors are a complex topic...", 4)
    examples, _ = examples_from_events([thumb("1", up1, 1, 1), thumb("2", down1, -1, 2), thumb("3", up2, 1, 3),
                                        thumb("4", down2, -1, 4)])  # fmt: skip
    split = pair_thumbs(examples, [])
    assert [(p.chosen.id, p.rejected.id) for p in split.pairs] == [("u1", "d1")]
    assert [e.id for e in split.ups] == ["u2"] and [e.id for e in split.downs] == ["d2"]
    contrasts = split.contrasts()
    assert len(contrasts) == 2 and contrasts[1].source == "cross"


def test_cap_per_user_keeps_the_most_recent() -> None:
    events = [
        thumb(f"f{i}", inf(f"i{i}", f"question number {i}", f"answer {i}", i, user="loud"), 1, i) for i in range(10)
    ]
    events += [thumb("q", inf("quiet", "another question", "x", 0, user="quiet"), -1, 0)]
    ds = build_dataset(events, max_per_user=3, holdout_fraction=0.0)
    ids = {e.id for e in ds.train.examples + ds.heldout.examples}
    assert ids == {"i7", "i8", "i9", "quiet"}


def test_heldout_is_the_latest_conversations_whole() -> None:
    events = []
    for i in range(10):
        session = f"s{i}"
        events.append(
            thumb(f"u{i}", inf(f"u{i}", f"question {i} alpha", "short", i * 100, session=session), 1, i * 100)
        )
        events.append(
            thumb(
                f"d{i}",
                inf(f"d{i}", f"question {i} beta gamma", "long " * 30, i * 100 + 1, session=session),
                -1,
                i * 100 + 1,
            )
        )
    ds = build_dataset(events, holdout_fraction=0.3)
    train_groups = {e.group for e in ds.train.examples}
    held_groups = {e.group for e in ds.heldout.examples}
    assert held_groups == {"s7", "s8", "s9"} and not train_groups & held_groups
    assert max(e.at for e in ds.train.examples) < min(e.at for e in ds.heldout.examples)
    assert ds.window["events"] == 20 and ds.window["until"] == 901


async def test_ledger_round_trip(tmp_path: Path) -> None:
    """The dataset from a real SQLite ledger: thumbs joined, the spec never in the prompt."""
    ledger = SqliteLedger(tmp_path / "l.db")
    await ledger.start()
    for i in range(4):
        ledger.record(inf(f"u{i}", f"q{i}", "fine answer", i))
        ledger.record(inf(f"d{i}", f"q{i}", "I guess this is an answer", i))
    await ledger.close()
    ledger = SqliteLedger(tmp_path / "l.db")
    await ledger.start()
    for i in range(4):
        await ledger.add_feedback(FeedbackRecord(f"fu{i}", f"u{i}", "thumb", 1, 10 + i))
        await ledger.add_feedback(FeedbackRecord(f"fd{i}", f"d{i}", "thumb", -1, 10 + i, "reluctant"))
    events = await ledger.feedback_events(spec="s")
    await ledger.close()
    ds = build_dataset(events, holdout_fraction=0.25)
    assert len(ds.train.pairs) == 3 and len(ds.heldout.pairs) == 1
    assert all(p.source == "thumbs" and p.chosen.prompt == p.rejected.prompt for p in ds.train.pairs)


# -- pairs files ----------------------------------------------------------------------------
def test_icai_csv_pairs_follow_preferred_text() -> None:
    pairs = read_pairs(ALIGNED)
    with ALIGNED.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(pairs) == len(rows) == 30
    for pair, row in zip(pairs, rows, strict=True):
        prompt, preferred = split_instruction_output(row[row["preferred_text"]])
        assert pair.chosen.response == preferred and pair.chosen.prompt == prompt
        assert pair.rejected.response != preferred and pair.rejected.value < 0 < pair.chosen.value
        assert not pair.chosen.response.startswith("Output:") and "Instruction:" not in pair.chosen.prompt


@pytest.mark.parametrize("name", ["synthetic_data_mixed_vqvtb_adcbg.csv", "synthetic_data_orthogonal_adcbg.csv"])
def test_all_icai_files_parse(name: str) -> None:
    assert len(read_pairs(ICAI / name)) in (30, 60)


def test_pairs_split_is_seeded_and_stratified() -> None:
    a = dataset_from_pairs(ALIGNED, 0.3, seed=1)
    b = dataset_from_pairs(ALIGNED, 0.3, seed=1)
    c = dataset_from_pairs(ALIGNED, 0.3, seed=2)
    assert [p.id for p in a.heldout.pairs] == [p.id for p in b.heldout.pairs] != [p.id for p in c.heldout.pairs]
    assert len(a.heldout.pairs) == 9 and len(a.train.pairs) == 21
    assert len({p.chosen.prompt for p in a.heldout.pairs}) == 3  # every question type held out


def test_jsonl_pairs_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(
        '{"prompt": "Q", "chosen": "yes", "rejected": "no"}\n\n{"prompt": "R", "chosen": "a", "rejected": "b"}\n'
    )
    pairs = read_pairs(f)
    assert [(p.chosen.prompt, p.chosen.response, p.rejected.response) for p in pairs] == [
        ("Q", "yes", "no"),
        ("R", "a", "b"),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Q", "chosen": "yes"}\n')
    with pytest.raises(
        PairsFileError, match=r"expected columns prompt \(optional\), chosen, rejected.*found \['chosen', 'prompt'\]"
    ):
        read_pairs(bad)
    badcsv = tmp_path / "bad.csv"
    badcsv.write_text("a,b\n1,2\n")
    with pytest.raises(PairsFileError, match=r"expected columns .*text_a, text_b, preferred_text.*found \['a', 'b'\]"):
        read_pairs(badcsv)
    with pytest.raises(PairsFileError, match="does not exist"):
        read_pairs(tmp_path / "missing.csv")
