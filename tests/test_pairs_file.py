"""Pairs files as users have them: the shapes of preference data, the split column, the seeded
random split of files without one, clear errors, ignored columns said once, large files."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from compiler.pairs_file import PairsFileError, dataset_from_pairs, read_file_pairs, read_pairs
from helpers import SHARED

COUNSEL = SHARED / "data" / "counsel-chat" / "pairs.jsonl"


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_split_column_is_honoured_and_test_validation_mean_held_out(tmp_path: Path) -> None:
    splits = ["train", "heldout", "test", "validation", "train", "TRAIN", "held_out", ""]
    rows = [{"prompt": f"Q{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "split": s}
            for i, s in enumerate(splits)]  # fmt: skip
    ds = dataset_from_pairs(jsonl(tmp_path / "p.jsonl", rows), 0.3, seed=0)
    held = {p.chosen.prompt for p in ds.heldout.pairs}
    train = {p.chosen.prompt for p in ds.train.pairs}
    assert {"Q1", "Q2", "Q3", "Q6"} <= held and {"Q0", "Q4", "Q5"} <= train
    assert "Q7" in held | train and not held & train  # the open row is drawn at random
    assert ds.window["split"] == "file column + seeded random"


def test_unknown_split_value_is_an_error(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "p.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b", "split": "later"}])
    with pytest.raises(PairsFileError, match=r"line 1: split must be one of .*'later'"):
        read_pairs(f)


@pytest.mark.skipif(not COUNSEL.exists(), reason="shared data not present")
def test_counsel_chat_keeps_its_split() -> None:
    ds = dataset_from_pairs(COUNSEL, 0.3, seed=0)
    assert (len(ds.train.pairs), len(ds.heldout.pairs)) == (131, 70)  # not 197 / 4


def test_one_pair_per_prompt_is_split_at_the_fraction(tmp_path: Path) -> None:
    rows = [{"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(100)]
    f = jsonl(tmp_path / "p.jsonl", rows)
    a, b, c = (dataset_from_pairs(f, 0.3, seed=s) for s in (1, 1, 2))
    assert len(a.heldout.pairs) == 30 and len(a.train.pairs) == 70
    assert [p.id for p in a.heldout.pairs] == [p.id for p in b.heldout.pairs]
    assert {p.id for p in a.heldout.pairs} != {p.id for p in c.heldout.pairs}
    held = sorted(int(p.chosen.prompt.split()[1]) for p in a.heldout.pairs)
    assert held != list(range(70, 100)) and held != list(range(30))  # drawn at random, not the file's end
    assert a.window["split"] == "seeded random"


def test_csv_prompt_chosen_rejected_and_preferred_column(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    with f.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "chosen", "rejected"])
        w.writerow(["Q", "yes", "no"])
    assert [(p.chosen.prompt, p.chosen.response, p.rejected.response) for p in read_pairs(f)] == [("Q", "yes", "no")]
    g = tmp_path / "q.csv"
    with g.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text_a", "text_b", "preferred"])
        w.writerow(["Instruction: Q\n\nOutput: first", "Instruction: Q\n\nOutput: second", "B"])
        w.writerow(["plain a", "plain b", "text_a"])
        w.writerow(["same a", "same b", "tie (bothbad)"])  # a tie says nothing: skipped
    got = [(p.chosen.prompt, p.chosen.response, p.rejected.response) for p in read_pairs(g)]
    assert got == [("Q", "second", "first"), ("", "plain a", "plain b")]


def test_chat_messages_prompt_is_the_shared_prefix(tmp_path: Path) -> None:
    system = {"role": "system", "content": "Be kind."}
    user = {"role": "user", "content": "How do I sleep better?"}
    rows = [{
        "chosen": [system, user, {"role": "assistant", "content": "Keep a regular bedtime."}],
        "rejected": [system, user, {"role": "assistant", "content": "Just sleep."}],
        "score_chosen": 8.0,
    }, {
        "prompt": [{"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello! How can I help?"}],
        "rejected": [{"role": "assistant", "content": "What."}],
    }]  # fmt: skip
    pairs = read_pairs(jsonl(tmp_path / "chat.jsonl", rows))
    assert pairs[0].chosen.prompt == "system: Be kind.\nuser: How do I sleep better?"
    assert (pairs[0].chosen.response, pairs[0].rejected.response) == ("Keep a regular bedtime.", "Just sleep.")
    assert (pairs[1].chosen.prompt, pairs[1].chosen.response) == ("Hi", "Hello! How can I help?")


def test_transcripts_split_at_the_shared_assistant_turn(tmp_path: Path) -> None:
    head = "\n\nHuman: What is 2+2?\n\nAssistant:"
    rows = [{"chosen": head + " 4.", "rejected": head + " 5."}]
    (p,) = read_pairs(jsonl(tmp_path / "hh.jsonl", rows))
    assert (p.chosen.prompt, p.chosen.response, p.rejected.response) == (
        "Human: What is 2+2?\n\nAssistant:",
        "4.",
        "5.",
    )


def test_json_array_and_extra_columns_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "p.json"
    f.write_text(json.dumps([{"question": f"Q{i}", "chosen": "a", "rejected": "b", "votes": i, "topic": "t"}
                             for i in range(3)]))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="speclearn.compiler"):
        pairs = read_pairs(f)
    assert [p.chosen.prompt for p in pairs] == ["Q0", "Q1", "Q2"]
    said = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert said == ["pairs file p.json (chosen/rejected): ignoring column(s) votes, topic"]


def test_errors_name_the_columns_expected(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "p.jsonl", [{"question": "Q", "answer": "A"}])
    with pytest.raises(PairsFileError, match=r"expected columns prompt \(optional\), chosen, rejected; or text_a"):
        read_pairs(f)
    g = jsonl(tmp_path / "q.jsonl", [{"chosen": "a", "rejected": "b"}, {"chosen": "a"}])
    with pytest.raises(PairsFileError, match="line 2: chosen and rejected must both be text"):
        read_pairs(g)
    h = tmp_path / "r.csv"
    h.write_text("text_a,text_b,preferred_text\nx,y,c\n")
    with pytest.raises(PairsFileError, match="row 1: preferred_text must be text_a or text_b"):
        read_pairs(h)
    same = jsonl(tmp_path / "s.jsonl", [{"chosen": "a", "rejected": "a"}])
    with pytest.raises(PairsFileError, match="no usable pairs"):
        read_pairs(same)


def test_ten_thousand_pairs_load(tmp_path: Path) -> None:
    f = tmp_path / "big.jsonl"
    with f.open("w") as fh:
        for i in range(10_000):
            fh.write(json.dumps({"prompt": f"Question number {i}?", "chosen": f"A helpful answer {i}.",
                                 "rejected": f"No {i}.", "split": "heldout" if i % 10 == 0 else "train"}) + "\n")  # fmt: skip
    assert len(read_file_pairs(f)) == 10_000
    ds = dataset_from_pairs(f, 0.3, seed=0)
    assert (len(ds.train.pairs), len(ds.heldout.pairs)) == (9_000, 1_000)
