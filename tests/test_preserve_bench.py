"""bench.learning.preserve's pure parts: line accounting, the byte-exact check, the taste assignment, the
table, and the corpus it runs on (no model is started)."""

from __future__ import annotations

import argparse
import re

import pytest

from bench.learning import preserve
from compiler.simulate import SEVEN, TASTES

HUMAN = "# Support\n\n- Be kind.\n- Escalate refunds.\n\n1. Answer.\n2. Cite.\n"
LEARNED = "\n## Learned from feedback\n\n- Answer in one short sentence of at most 25 words.\n"


def test_every_line_kept_and_byte_exact_when_the_section_is_appended() -> None:
    p = preserve.preservation(HUMAN, HUMAN + LEARNED)
    assert (p["kept"], p["lines"], p["kept_ratio"]) == (5, 5, 1.0)
    assert p["byte_exact_prefix"] and p["human_part_unchanged"]
    assert p["learned_section"] == "- Answer in one short sentence of at most 25 words."
    assert p["spec_tokens_added"] > 0


def test_a_dropped_line_is_counted_and_named() -> None:
    served = HUMAN.replace("- Escalate refunds.\n", "") + LEARNED
    p = preserve.preservation(HUMAN, served)
    assert (p["kept"], p["lines"]) == (4, 5)
    assert p["missing"] == ["- Escalate refunds."]
    assert not p["byte_exact_prefix"] and not p["human_part_unchanged"]


def test_lines_moved_are_kept_but_not_byte_exact() -> None:
    """A rewrite that keeps every line but reorders them (the issue's title moved to the end)."""
    lines = HUMAN.splitlines()
    served = "\n".join([*lines[1:], lines[0]]) + "\n"
    p = preserve.preservation(HUMAN, served)
    assert p["kept"] == p["lines"]
    assert not p["byte_exact_prefix"]


def test_a_line_edited_in_place_is_missing() -> None:
    p = preserve.preservation(HUMAN, HUMAN.replace("- Be kind.", '- Be kind. Never use the phrase "Steps".'))
    assert p["missing"] == ["- Be kind."]
    assert not p["byte_exact_prefix"]


def test_a_repeated_line_must_be_served_as_often() -> None:
    human = "- Cite.\n- Cite.\n"
    assert preserve.preservation(human, "- Cite.\n")["kept"] == 1
    assert preserve.preservation(human, human)["kept"] == 2


def test_whitespace_only_lines_are_not_counted_but_break_byte_exactness() -> None:
    human = "a\n  \nb\n"
    assert preserve.preservation(human, human)["lines"] == 2
    assert not preserve.preservation(human, "a\n\nb\n")["byte_exact_prefix"]


def test_round_robin_uses_every_taste_in_a_fixed_order() -> None:
    pairs = preserve.assign()
    assert [n for n, _ in pairs] == list(preserve.ORDER)
    assert {t for _, t in pairs} == set(SEVEN)
    assert pairs[:2] == [(preserve.ORDER[0], SEVEN[0]), (preserve.ORDER[1], SEVEN[1])]
    assert pairs[7][1] == SEVEN[0]


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"prompt": None, "taste": None, "quick": False, **kw})


def test_pair_selection() -> None:
    assert preserve.pairs_for(_args(quick=True)) == [preserve.QUICK]
    assert preserve.pairs_for(_args(prompt=["hr_policy"])) == [("hr_policy", SEVEN[8 % 7])]
    assert preserve.pairs_for(_args(prompt=["hr_policy"], taste="reason")) == [("hr_policy", "reason")]
    assert len(preserve.pairs_for(_args())) == len(preserve.ORDER)


def test_oracle_spec_is_the_prompt_then_the_sentence() -> None:
    spec = preserve.oracle_spec(HUMAN, TASTES["french"])
    assert spec.startswith(HUMAN) and spec.endswith("Always answer in French.")
    assert "You are a helpful assistant." not in spec


def _row(**kw: object) -> dict[str, object]:
    arm = {"rate": 0.5, "ups": 6, "n": 12, "wilson95": (0.25, 0.75)}
    row = {"prompt": "hr_policy", "taste": "short", "prompt_tokens": 1569,
           "preservation": preserve.preservation(HUMAN, HUMAN + LEARNED), "before": arm, "compiled": arm,
           "oracle": arm, "compiled_over_oracle": 1.0, "one_line_compiled_over_oracle": 0.8, "llm_calls": 57,
           "tokens": 6000, "compile_seconds": 120.4, "compile_results": ["published"], "published": "demo@2"}  # fmt: skip
    return {**row, **kw}


def test_table_renders_a_row_per_pair_with_the_same_columns() -> None:
    rows = [_row(), _row(prompt="triage_json", oracle=None, compiled_over_oracle=None),
            {"prompt": "store_snowy_peak", "taste": "no_phrase", "prompt_tokens": 2981,
             "error": "HTTPStatusError: 400"}]  # fmt: skip
    text = preserve.table(rows)
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows)
    assert len({line.count("|") for line in lines}) == 1  # every row has the header's columns
    assert "| 5/5 (100%) | yes | 0.50 [0.25,0.75] |" in lines[2]
    assert re.search(r"\| - \| n/a \| 0\.80 \|", lines[3])
    assert "error: HTTPStatusError: 400" in lines[4]


def test_summary_counts_lines_and_pairs() -> None:
    dropped = preserve.preservation(HUMAN, HUMAN.replace("- Be kind.\n", ""))
    s = preserve.summary([_row(), _row(preservation=dropped, compiled_over_oracle=0.5), {"prompt": "x", "error": "e"}])
    assert s["lines_kept"] == "9/10" and not s["all_lines_kept"]
    assert (s["pairs"], s["errors"], s["byte_exact"]) == (3, 1, 1)
    assert s["mean_compiled_over_oracle"] == 0.75 and s["at_least_0.9_of_oracle"] == 1


def test_one_line_baseline_reads_bench_quality_results(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = preserve.one_line_baseline()
    assert set(base) == set(SEVEN), "bench/results/quality7d.json holds the seven tastes"
    assert preserve.one_line_baseline(tmp_path / "missing.json") == {}


@pytest.mark.parametrize("name", preserve.ORDER)
def test_corpus_prompt_is_a_plain_prompt_of_the_stated_size(name: str) -> None:
    text = preserve.load_prompt(name)
    assert 300 <= preserve.approx_tokens(text) <= 3000
    assert "## Learned from feedback" not in text  # else its human part would be cut at the heading
    low = text.lower()
    assert "hope this helps" not in low and "answer in french" not in low  # no prompt states its taste


def test_corpus_shape_and_sources() -> None:
    files = {f.stem for f in preserve.PROMPTS_DIR.glob("*.md")} - {"SOURCES"}
    assert files == set(preserve.ORDER)
    assert 8 <= len(files) <= 12
    assert sum(preserve.approx_tokens(preserve.load_prompt(n)) > 1500 for n in files) >= 2
    sources = (preserve.PROMPTS_DIR / "SOURCES.md").read_text(encoding="utf-8")
    for n in files:
        row = next(line for line in sources.splitlines() if line.startswith(f"| `{n}.md` |"))
        tokens = int(row.split("|")[3].strip().replace(",", ""))
        assert tokens == preserve.approx_tokens(preserve.load_prompt(n)), n
        assert "MIT" in row or "written for speclearn" in row, n
