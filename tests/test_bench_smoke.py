"""Smoke test of the overhead benchmark: it runs end to end and every request succeeds.

Why no timing assertions: CI machines are shared and noisy; a latency threshold here would only
flake. The benchmark's numbers are read by people (bench/README.md); this test guards that the
harness itself works — mock, load generator, speclearn start-up, spec injection, JSON shape.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
POINT_KEYS = {
    "target",
    "stream",
    "mode",
    "offered_rps",
    "concurrency",
    "duration_s",
    "sent",
    "ok",
    "errors",
    "error_kinds",
    "achieved_rps",
    "latency_ms",
    "ttft_ms",
    "inter_chunk_ms",
    "cpu_ms_per_req",
    "rss_peak_mb",
    "spec_injected_fraction",
    "saturated",
}


@pytest.mark.timeout(240)
def test_quick_overhead_run(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.performance.overhead", "--quick", "--skip-litellm", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert proc.returncode == 0, f"bench failed:\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-4000:]}"
    result = json.loads((out / "overhead.json").read_text())

    assert {"meta", "targets", "mock", "peak_rss_mb", "headline", "points"} <= result.keys()
    assert result["targets"]["speclearn"]["status"] == "ok"
    assert "litellm" not in result["targets"]

    points = result["points"]
    for target in ("direct", "speclearn"):
        mine = [p for p in points if p["target"] == target]
        # 2 rates + 1 saturation run, for JSON and for SSE
        assert len(mine) == 6, [(p["stream"], p["mode"], p["offered_rps"]) for p in mine]
        assert {p["stream"] for p in mine} == {False, True}
        assert {p["mode"] for p in mine} == {"open", "saturation"}
        for p in mine:
            assert POINT_KEYS <= p.keys()
            assert p["errors"] == 0, (target, p["stream"], p["offered_rps"], p["error_kinds"])
            assert p["ok"] > 0 and p["ok"] == p["sent"]
            assert set(p["latency_ms"]) >= {"p50", "p90", "p99"}
            if p["stream"]:
                assert p["ttft_ms"] is not None and p["inter_chunk_ms"] is not None
    for p in points:
        if p["target"] == "speclearn":
            assert p["added_latency_ms"] is not None and set(p["added_latency_ms"]) == {"p50", "p90", "p99"}
            # Every upstream request carried the bench spec: injection is really on the path.
            assert p["spec_injected_fraction"] == 1.0
            assert p["rss_peak_mb"] and p["rss_peak_mb"] > 0
        else:
            assert p["spec_injected_fraction"] == 0.0


def test_wording_counts_the_answers_the_taste_likes(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.learning.wording import main
    from tests.fake_llm import FakeLLM
    from tests.test_compiler_unary import model_that_closes_only_when_told

    told = 'Be helpful. End every answer with the line "Hope this helps!".'
    with FakeLLM(answer=model_that_closes_only_when_told).serve() as base_url:
        assert main(["--taste", "closing", "--questions", "4", "--base-url", base_url,
                     "--spec", told, "--spec", "Be helpful."]) == 0  # fmt: skip
    assert capsys.readouterr().out.splitlines() == [f"4/4 [0.51,1.00]  {told}", "0/4 [0.00,0.49]  Be helpful."]


def test_prompt_cache_counts_answers_that_depend_on_the_request_before() -> None:
    """A model whose cached answers remember the previous request's system message: with the
    cache on, only the first question (asked right after each history) differs."""
    from bench.learning.prompt_cache import identical_after_histories
    from tests.fake_llm import FakeLLM, system_message

    previous = {"system": ""}

    def remembering_model(body: dict[str, Any]) -> str:
        before, previous["system"] = previous["system"], system_message(body)
        question = body["messages"][-1]["content"]
        return f"{question} (after {before})" if body.get("cache_prompt") else question

    questions = ["Why is the sky blue?", "What is a prime?", "How do I boil an egg?"]
    with FakeLLM(answer=remembering_model).serve() as base_url:
        assert identical_after_histories(base_url, questions, cache=True) == 2
        assert identical_after_histories(base_url, questions, cache=False) == 3


def test_noise_benchmark_runs_on_a_small_pool(tmp_path: Path) -> None:
    """bench.learning.noise with the scripted LLM on a hand-made pool: its last line has the promised shape."""
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps([{"prompt": f"Question {i}?", "answer": " ".join(["word"] * (5 + 7 * (i % 4)))}
                                for i in range(30)]))  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "bench.learning.noise", "--pool", str(pool), "--rounds", "4", "--scenario", "coin",
         "--scenario", "taste:short", "--out", str(tmp_path / "noise.json")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"noise: published \d+ of 4 rounds \(alpha 0\.05\)", last), last
    report = json.loads((tmp_path / "noise.json").read_text())["report"]
    assert [s["scenario"] for s in report] == ["coin", "taste:short"] and all(s["rounds"] == 4 for s in report)


def test_experiments_simulation_runs_and_reports(tmp_path: Path) -> None:
    """bench.learning.experiments on a tiny size: the JSON shape, the old rule beside the new, the last line."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.learning.experiments", "--runs", "40", "--max-thumbs", "300", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "experiments.json").read_text())
    rows = {(r["rule"], r["lift"]): r for r in result["results"]}
    assert set(rows) == {(rule, lift) for rule in ("msprt", "old") for lift in (0.0, 0.05, 0.10)}
    for r in rows.values():
        assert r["runs"] == 40 and r["promoted"] + r["rolled_back"] + r["undecided"] == 40
    # the same sample paths under both rules: the old one decides wrongly far more often under A/A
    assert rows[("old", 0.0)]["promoted"] + rows[("old", 0.0)]["rolled_back"] > rows[("msprt", 0.0)]["promoted"] + 5
    assert [g["candidate_error_rate"] for g in result["guardrail"]] == [0.05, 0.10]
    last = proc.stdout.strip().splitlines()[-1]
    assert last == f"A/A false promotions: {rows[('msprt', 0.0)]['promoted']} of 40 runs (alpha 0.05)"


def test_reconstruct_prints_one_line_per_data_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The reconstruction benchmark end to end on the fake LLM (compile, judge arms, checks)."""
    import re

    from bench.learning.reconstruct import DATASETS, main
    from tests.fake_llm import FakeLLM

    out = tmp_path / "reconstruct.json"
    with FakeLLM().serve() as base_url:
        assert main(["--base-url", base_url, "--limit", "2", "--seeds", "0", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()[-len(DATASETS) :]
    num, ci = r"\d\.\d\d", r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\]"
    for name, line in zip(DATASETS, lines, strict=True):
        oracle = "-" if name == "counsel-chat" else num
        assert re.fullmatch(rf"{name}: unguided {ci} guided {ci} oracle {oracle} checks ({num}|-)", line), line
    report = json.loads(out.read_text())
    assert [r["dataset"] for r in report["results"]] == list(DATASETS)
    for r in report["results"]:
        assert r["unguided"]["n"] == r["guided"]["n"] == 2 and r["unguided"]["llm_calls"] == 4  # both orders
        (run,) = r["runs"]
        assert run["compile"]["llm_calls"] > 0 and run["compile"]["spec"]
    counsel = report["results"][-1]
    assert counsel["runs"][0]["train"] == 131 and counsel["oracle"] is None  # its own split column
    assert report["results"][0]["runs"][0]["train"] == 20
    assert report["settings"]["judge"] is None and "mean_margin" in report["results"][0]["guided"]
    choice = report["results"][0]["judge_choice"]  # chosen on the shipped items before any data set
    assert choice["by"] == "known-answer items" and set(choice["by_kind"]) == {"pointwise", "pairwise"}
    assert all(v["n"] == 30 for v in choice["by_kind"].values())
    assert report["results"][0]["judge"].endswith("/" + choice["kind"])
    assert all(r["gain"]["n"] == 2 for r in report["results"])  # guided vs unguided, paired on the test pairs
    # a saved run prints again without an LLM, its derived arms recomputed to the same values
    assert main(["--report", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-len(DATASETS) :] == lines
    with FakeLLM().serve() as base_url:  # the saved specs judged again by another judge kind, no compile
        again = tmp_path / "again.json"
        assert (
            main(
                [
                    "--report",
                    str(out),
                    "--judge",
                    "pairwise",
                    "--base-url",
                    base_url,
                    "--out",
                    str(again),
                    "--dataset",
                    "orthogonal",
                    "--dataset",
                    "unaligned",
                ]
            )
            == 0
        )
    rejudged = json.loads(again.read_text())["results"]
    chosen = [r for r in report["results"] if r["dataset"] in ("orthogonal", "unaligned")]
    assert [r["runs"][0]["compile"] for r in rejudged] == [r["runs"][0]["compile"] for r in chosen]
    assert all(r["judge"].endswith("/pairwise") and r["guided"]["llm_calls"] == 4 for r in rejudged)  # both orders
    assert all(r["judge_choice"] == {"kind": "pairwise", "by": "--judge"} for r in rejudged)
    for r in report["results"]:  # checks, then judge: the checks' vote where they decide, else the judge's
        for run in r["runs"]:
            if run["checks"] is None:
                assert run["spec"] == run["guided"]
            else:
                assert run["spec"]["votes"] == [
                    c or g for c, g in zip(run["checks"]["votes"], run["guided"]["votes"], strict=True)
                ]


async def test_reconstruct_chooses_its_judge_kind_on_known_answers() -> None:
    """The kind right most often on the shipped items judges the run; a tie keeps the compiler's first."""
    from bench.learning.reconstruct import choose_kind
    from compiler.llm import LLMClient
    from tests.fake_llm import CALIBRATION, FakeLLM

    def knows(criteria: str, a: str, b: str) -> str | None:
        return "A" if (a, b) in CALIBRATION else "B" if (b, a) in CALIBRATION else None

    only_pairwise = FakeLLM(judge=knows, point_judge=None, knows_calibration=False)  # pointwise: always "Yes"
    judge, choice = await choose_kind(LLMClient("http://fake/v1", "fake", transport=only_pairwise.transport))
    assert (judge.kind, choice["kind"]) == ("pairwise", "pairwise")
    assert (choice["by_kind"]["pairwise"]["right"], choice["by_kind"]["pointwise"]["right"]) == (30, 0)
    both = FakeLLM()
    judge, choice = await choose_kind(LLMClient("http://fake/v1", "fake", transport=both.transport))
    assert judge.kind == "pointwise" and {v["right"] for v in choice["by_kind"].values()} == {30}


async def test_reconstruct_turns_the_prompt_cache_off_only_on_its_own_llama_cpp_judge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import contextlib
    from types import SimpleNamespace

    from bench.learning.reconstruct import endpoints, judge_client, parse_args
    from proxy.local_model import LocalModelSupervisor

    started = contextlib.nullcontext(SimpleNamespace(base_url="http://127.0.0.1:1/v1"))
    monkeypatch.setattr(LocalModelSupervisor, "from_settings", classmethod(lambda cls, *a, **kw: started))
    for argv, embedded in (([], True), (["--judge-base-url", "https://api.example/v1"], False)):
        with endpoints(parse_args(argv), compiler=False) as ep:
            async with judge_client(ep) as llm:  # another API may refuse a field it does not know
                assert (ep.judge_embedded, llm.extra_body) == (embedded, {"cache_prompt": False} if embedded else {})


def test_reconstruct_counts_a_forced_choice() -> None:
    """A judge leaning the person's way by a hair reconstructs the pair; only an exact tie is no opinion."""
    from bench.learning.reconstruct import pool

    a = {"right": 1, "n": 2, "no_opinion": 0, "llm_calls": 4, "tokens": 10, "seconds": 1.0, "mean_margin": 0.1}
    b = {**a, "right": 3, "n": 6, "mean_margin": -0.1}
    pooled = pool([a, None, b])
    assert pooled is not None and (pooled["right"], pooled["n"], pooled["mean_margin"]) == (4, 8, -0.05)
    from bench.learning.reconstruct import checks_then_judge

    guided = {**a, "votes": [1, -1, -1, 0], "n": 4}
    both = checks_then_judge({"votes": [0, 1, -1, 0]}, guided)
    assert (both["votes"], both["right"], both["no_opinion"], both["llm_calls"]) == ([1, 1, -1, 0], 2, 1, 4)
    assert checks_then_judge(None, guided) is guided


def test_paired_difference_interval() -> None:
    """Newcombe's paired interval: holds the estimate, mirrors when the arms swap, excludes zero
    only for a clear gain, and stays inside [-1, 1] at the extremes."""
    from bench.learning.reconstruct import guided_gain
    from bench.stats import paired_difference

    d, lo, hi = paired_difference(3, 4, 1, 2)
    assert lo < d < hi and d == pytest.approx(0.3)
    d2, lo2, hi2 = paired_difference(3, 1, 4, 2)
    assert (d2, lo2, hi2) == pytest.approx((-d, -hi, -lo))
    assert paired_difference(0, 10, 0, 0)[1] > 0 and paired_difference(0, 0, 10, 0)[2] < 0
    d, lo, hi = paired_difference(5, 0, 0, 5)  # all concordant: no gain, and not a zero-width interval
    assert d == 0 and lo < 0 < hi
    assert -1 <= paired_difference(0, 1, 0, 0)[1] and paired_difference(1, 0, 0, 0)[2] <= 1
    wide, narrow = paired_difference(1, 2, 0, 1), paired_difference(10, 20, 0, 10)
    assert narrow[2] - narrow[1] < wide[2] - wide[1]
    runs = [{"guided": {"votes": [1, 1, -1, 0]}, "unguided": {"votes": [-1, 1, 1, -1]}}]
    g = guided_gain(runs)
    assert g is not None and (g["n"], g["only_guided_right"], g["only_unguided_right"], g["difference"]) == (
        4,
        1,
        1,
        0.0,
    )


# -- bench.learning.versus_dpo: what runs without the `dpo` extra (the benchmark itself needs it and a model)
def test_versus_dpo_arguments_and_measures() -> None:
    from bench.learning.versus_dpo import best_fluent, measure, pairwise_summary, parse_args, repeats_ngram
    from compiler.simulate import TASTES

    a = parse_args(["--taste", "short", "--lrs", "5e-5,2e-4", "--arms", "a,b,c,d", "--limit-pairs", "8"])
    assert (a.taste, a.lrs, a.arms, a.limit_pairs, a.epochs) == (["short"], [5e-5, 2e-4], ["a", "b", "c", "d"], 8, 1.0)
    assert parse_args([]).arms == ["a", "b", "c"]
    with pytest.raises(SystemExit):
        parse_args(["--arms", "a,x"])
    # a collapsed policy repeats itself; a fluent answer does not
    assert repeats_ngram("Hope this helps! Hope this helps! Hope this helps! Hope this helps!")
    assert not repeats_ngram("Cats purr when they are content, and sometimes when they are hurt.")
    m = measure(TASTES["short"], ["Red.", "word " * 40, "Blue is a color."], [False, True, False])
    assert (m["ups"], m["n"], m["repetition"]["n"], m["truncated"]["n"]) == (2, 3, 1, 1)
    sweep = [{"lr": 5e-5, "arm": {"rate": 0.2, "repetition": {"share": 0.0}}},
             {"lr": 2e-4, "arm": {"rate": 0.9, "repetition": {"share": 0.8}}}]  # fmt: skip
    best = best_fluent(sweep, base_repetition=0.0, margin=0.1)  # the high rate came from collapse
    assert best is not None and best["lr"] == 5e-5 and [s["fluent"] for s in sweep] == [True, False]
    assert pairwise_summary([1, 1, -1, 0])["spec_win_rate"] == round(2 / 3, 3)


async def test_versus_dpo_asks_the_served_arms_greedily_and_one_answer_apart() -> None:
    """The spec arms' answers must not depend on the question before (llama.cpp's prompt cache)."""
    from bench.learning.versus_dpo import served
    from tests.fake_llm import FakeLLM

    bodies: list[dict[str, Any]] = []

    def model(body: dict[str, Any]) -> str:
        bodies.append(body)
        return "ok"

    with FakeLLM(answer=model).serve() as base_url:
        texts, cut = await served(base_url, "support", ["Why?", "How?"], max_tokens=16)
    assert texts == ["ok", "ok"] and cut == [False, False]
    assert [(b["temperature"], b["seed"], b["cache_prompt"], b["max_tokens"]) for b in bodies] == [
        (0.0, 0, False, 16)
    ] * 2


def test_versus_dpo_pairs_are_the_compilers_with_the_instruction_first() -> None:
    from bench.learning.versus_dpo import training_rows
    from compiler.dpo_export import dpo_rows
    from proxy.ledger import FeedbackEvent, FeedbackRecord, InferenceRecord

    def inference(i: int, question: str, answer: str) -> InferenceRecord:
        return InferenceRecord(f"i{i}", float(i), "chat", "m", "demo", 1, "h",
                               {"messages": [{"role": "user", "content": question}]}, answer,
                               metadata={"user": f"sim-{i % 2}"})  # fmt: skip

    events = []
    for i in range(8):
        q = f"Question {i // 2}?"
        inf = inference(i, q, "Short." if i % 2 else "A long answer " * 10)
        events.append(FeedbackEvent(FeedbackRecord(f"f{i}", inf.id, "thumb", 1.0 if i % 2 else -1.0, float(i)), inf))
    rows = dpo_rows(events, "all")
    assert len(rows) == 4 and {r["source"] for r in rows} == {"thumbs"}
    assert all(r["chosen"][0]["content"] == "Short." for r in rows)
    train = training_rows(rows, "You are a helpful assistant.", limit=3)
    assert len(train) == 3
    assert train[0]["prompt"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert train[0]["prompt"][1:] == rows[0]["prompt"]


def test_versus_dpo_without_the_extra_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.learning import dpo_train, versus_dpo

    monkeypatch.setattr(dpo_train, "missing_packages", lambda: ["trl"])
    assert versus_dpo.main(["--taste", "short"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "trl" in err[0]
    assert err[0].endswith("pip install torch==2.13.0 && pip install -e '.[dpo]'")


def test_versus_dpo_config_fits_the_installed_trl(tmp_path: Path) -> None:
    """The DPOConfig bench/learning/dpo_train.py builds is accepted by the installed TRL (no model loaded)."""
    pytest.importorskip(
        "trl", reason="the `dpo` extra is not installed: pip install torch==2.13.0 && pip install -e '.[dpo]'"
    )
    from bench.learning.dpo_train import dpo_config

    config = dpo_config(str(tmp_path), lr=5e-5, epochs=1, max_length=256)
    assert (config.learning_rate, config.max_length, config.gradient_checkpointing) == (5e-5, 256, False)
    assert config.per_device_train_batch_size == 2 and config.use_cpu
