"""Spec versus DPO on the same feedback: would fine-tuning have served these users better?

For each hidden preference of bench.learning.quality (compiler/simulate.py TASTES), simulated users rate
answers through the real proxy (`compiler.simulate.closed_loop`, as bench.learning.quality runs it: 20
training questions x 2 answers, every 2nd user comments on a down vote, one compile round).
From those same feedback events, the arms answer the 12 held-out questions:

- a  instruction: the instruction-only spec ("You are a helpful assistant."), served by the proxy;
- b  compiled:    the spec the compile round published, served by the proxy;
- c  dpo:         a LoRA-DPO adapter of the same 0.5B model (transformers on the GGUF llama.cpp
                  serves, bench/learning/dpo_train.py) trained on the pairs the compiler built from the
                  feedback (compiler/dpo_export.py, what `feedback export --format dpo` writes),
                  answering greedily with the instruction as its system message; a small sweep
                  of learning rates (`--lrs`), the best *fluent* one reported;
- d  dpo_5x:      the same with 5x the feedback from the same users (4x more ratings of
                  instruction-only answers to the training questions), at arm c's learning rate.

Also `base_hf`: the instruction-only arm answered by the transformers copy without an adapter,
the control that separates what DPO changed from what the runtime changed (fp32 vs Q4_K_M).

Each arm: the users' own check (Taste.likes) with Wilson 95% intervals, mean words, and
degeneration: the share of answers with a word 4-gram repeated 3+ times, and the share cut by the
token cap. Spec vs DPO: pairwise by the 1.5B local judge (compiler.judge.PairwiseJudge, both
presentation orders), once by the preference stated as a rule and once by plain helpfulness; a
question goes to the side the judge leans to (forced choice, as bench.learning.reconstruct counts).
Costs: the compile's LLM calls and seconds, DPO training seconds and peak RSS.

    flock /tmp/speclearn-cpu.lock python -m bench.learning.versus_dpo --taste short --taste french --taste example
    python -m bench.learning.versus_dpo --taste short --limit-pairs 4 --lrs 5e-5 --out /tmp/trial.json   # a trial

A setting is fluent when its repetition share is at most the base_hf share + `--fluent-margin`
(0.2: the untuned model itself repeats a 4-gram in some answers, "X is a noun, Y is a noun, …").
Needs the `dpo` extra: pip install torch==2.13.0 && pip install -e '.[dpo]'.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from bench.learning import dpo_train
from bench.learning.quality import arm, compiler_overrides, embedded_models, fmt_arm, wilson
from compiler.judge import forced_choice
from compiler.simulate import ASSISTANT, PROMPTS, SEVEN, TASTES, Taste, ask_and_rate, closed_loop, proxy_process

ARMS = ("a", "b", "c", "d")
ARM_NAMES = {"a": "instruction", "b": "compiled", "c": "dpo", "d": "dpo_5x", "base_hf": "base (transformers)"}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "versus_dpo.json"
HELPFUL = "Give a helpful, fluent and correct answer to the question."
_WORD_RE = re.compile(r"[\w']+")
SPEC = "demo"  # the spec closed_loop compiles


# -- measures ------------------------------------------------------------------------------------
def repeats_ngram(text: str, n: int = 4, times: int = 3) -> bool:
    """Some word n-gram occurs `times` or more times: the loop a collapsed policy falls into."""
    words = _WORD_RE.findall(text.lower())
    counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return bool(counts) and max(counts.values()) >= times


def measure(taste: Taste, texts: Sequence[str], truncated: Sequence[bool]) -> dict[str, Any]:
    """One arm on the held-out questions: the users' check, length and degeneration."""
    n = len(texts)
    ups = sum(taste.likes(t) for t in texts)
    rep = sum(repeats_ngram(t) for t in texts)
    cut = sum(truncated)
    return {
        **arm(ups, n),
        "mean_words": round(sum(len(t.split()) for t in texts) / n, 1) if n else 0.0,
        "repetition": {"share": round(rep / n, 3) if n else 0.0, "n": rep, "wilson95": wilson(rep, n)},
        "truncated": {"share": round(cut / n, 3) if n else 0.0, "n": cut, "wilson95": wilson(cut, n)},
        "answers": list(texts),
    }


def training_rows(rows: Sequence[dict[str, Any]], instruction: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Export rows -> DPO training rows: the instruction first as the system message, as the
    proxy prepends it to every request (the DPO arm answers under the same system message)."""
    system = [{"role": "system", "content": instruction}] if instruction.strip() else []
    out = [{**r, "prompt": system + list(r["prompt"])} for r in rows]
    return out[:limit] if limit is not None else out


def best_fluent(sweep: Sequence[dict[str, Any]], base_repetition: float, margin: float) -> dict[str, Any] | None:
    """The sweep entry with the highest rate among the fluent ones (ties: the gentler lr); if
    none is fluent, the gentlest, marked so."""
    for s in sweep:
        s["fluent"] = s["arm"]["repetition"]["share"] <= base_repetition + margin
    fluent = [s for s in sweep if s["fluent"]]
    if fluent:
        return max(fluent, key=lambda s: (s["arm"]["rate"], -s["lr"]))
    return min(sweep, key=lambda s: s["lr"]) if sweep else None


def pairwise_summary(verdicts: Sequence[int], scores: Sequence[float] = ()) -> dict[str, Any]:
    """+1 spec won, -1 DPO won, 0 an exact tie (compiler.judge.forced_choice on the mean of both
    orders, as bench.learning.reconstruct counts): the spec's win rate among decided questions; `scores`
    are the judge's P(spec better), whose mean says how far it leans."""
    wins, losses = verdicts.count(1), verdicts.count(-1)
    decided = wins + losses
    return {"spec_wins": wins, "dpo_wins": losses, "ties": verdicts.count(0), "n": len(verdicts),
            "spec_win_rate": round(wins / decided, 3) if decided else None, "wilson95": wilson(wins, decided),
            "mean_p_spec": round(sum(scores) / len(scores), 3) if scores else None}  # fmt: skip


# -- the served arms and the feedback ------------------------------------------------------------
async def served(proxy: str, ref: str, questions: Sequence[str], max_tokens: int) -> tuple[list[str], list[bool]]:
    """Greedy answers through the proxy under spec `ref` (no feedback posted), each independent
    of the question before (llama.cpp's prompt cache off, as the closed loop asks)."""
    from compiler.simulate import EVAL_LLAMA_CPP

    texts, cut = [], []
    async with httpx.AsyncClient(timeout=300) as client:
        for q in questions:
            r = await client.post(f"{proxy}/specs/{ref}/v1/chat/completions", json={
                "model": "local", "messages": [{"role": "user", "content": q}], "max_tokens": max_tokens,
                "temperature": 0.0, "seed": 0, **EVAL_LLAMA_CPP})  # fmt: skip
            r.raise_for_status()
            choice = r.json()["choices"][0]
            texts.append((choice["message"]["content"] or "").strip())
            cut.append(choice.get("finish_reason") == "length")
    return texts, cut


async def pairs_from_ledger(
    data: Path, specs: Path, windows: Sequence[tuple[float, float]], split: str
) -> list[dict[str, Any]]:
    """The DPO rows the compiler's code builds from the ledger's feedback inside `windows`."""
    from compiler.dpo_export import dpo_rows
    from compiler.settings import CompilerSettings
    from proxy.ledger import open_ledger
    from proxy.settings import Settings

    ledger = open_ledger(Settings(data_dir=data, specs_dir=specs))
    await ledger.start()
    try:
        events = await ledger.feedback_events(spec=SPEC)
    finally:
        await ledger.close()
    events = [e for e in events if any(lo <= e.feedback.created_at <= hi for lo, hi in windows)]
    c = CompilerSettings()  # closed_loop keeps the defaults for the cap and the split
    return dpo_rows(events, split, holdout_fraction=c.holdout_fraction, max_per_user=c.max_per_user)  # type: ignore[arg-type]


async def judge_pairs(base_url: str, model: str, rule: str, questions: Sequence[str], spec: Sequence[str],
                      dpo: Sequence[str]) -> tuple[list[float], int]:  # fmt: skip
    """Spec's answer (as `chosen`) against DPO's on each question, both orders: P(spec better)
    per question, and the LLM calls spent."""
    from compiler.dataset import Example, Pair
    from compiler.judge import PairwiseJudge
    from compiler.llm import Budget, LLMClient

    budget = Budget(10**6, 10**10)
    async with LLMClient(base_url, model, budget=budget, concurrency=2) as llm:
        judge = PairwiseJudge(llm)
        pairs = [Pair(f"q{i}", Example(f"s{i}", q, s, 1.0), Example(f"d{i}", q, d, -1.0), "file")
                 for i, (q, s, d) in enumerate(zip(questions, spec, dpo, strict=True))]  # fmt: skip
        scores = await asyncio.gather(*(judge.by_rule(rule, p, "versus") for p in pairs))
    return list(scores), budget.calls


def taste_rule(taste: Taste) -> str:
    """The preference as a rule for the judge: the oracle spec without the bare instruction."""
    return taste.oracle.removeprefix(ASSISTANT).strip() or taste.description


# -- one preference ------------------------------------------------------------------------------
def run_taste(name: str, a: argparse.Namespace, base_url: str, model: str, policy_of: Callable[[], Any],
              say: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    taste = TASTES[name]
    max_tokens = taste.max_tokens
    train, held = PROMPTS[: a.train], PROMPTS[a.train : a.train + a.eval]
    overrides = compiler_overrides(model, a)  # the round bench.learning.quality runs
    out: dict[str, Any] = {"taste": name, "description": taste.description, "max_tokens": max_tokens, "arms": {}}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"speclearn-versus-{name}-") as tmp:
        work = Path(tmp)
        marks: dict[str, float] = {"start": time.time()}

        def loop_say(m: str) -> None:
            if m.startswith("round 0: compile"):  # printed once the round is over
                marks["compiled"] = time.time()
            say(m)

        rows = asyncio.run(closed_loop(
            base_url, work, taste, rounds=1, train_prompts=train, eval_prompts=held, samples=a.samples,
            compiler_overrides=overrides, instruction=ASSISTANT, say=loop_say, complain_every=a.complain_every,
            concurrency=a.concurrency))  # fmt: skip
        trained = rows[:-1]
        out["compile"] = {
            "result": "; ".join(f"{r.compile_result}" + (f" ({r.compile_reason})" if r.compile_reason else "") for r in trained),
            "llm_calls": sum(r.llm_calls for r in trained), "tokens": sum(r.tokens for r in trained),
            "seconds": round(sum(r.compile_seconds for r in trained), 1), "spec": rows[-1].spec_text,
            "feedback_events": sum(r.feedback_events for r in trained), "comments": sum(r.comments for r in trained),
            "loop_rates": {"before": arm(rows[0].eval_ups, rows[0].eval_n), "after": arm(rows[-1].eval_ups, rows[-1].eval_n)},
        }  # fmt: skip
        specs, data = work / "specs", work / "data"
        windows = [(marks["start"], marks.get("compiled", time.time()))]
        with proxy_process(base_url, specs, data) as proxy:
            a_text, a_cut = asyncio.run(served(proxy, f"{SPEC}@1", held, max_tokens))
            b_text, b_cut = asyncio.run(served(proxy, SPEC, held, max_tokens))
            out["arms"]["a"], out["arms"]["b"] = measure(taste, a_text, a_cut), measure(taste, b_text, b_cut)
            rows_c = asyncio.run(pairs_from_ledger(data, specs, windows, a.dpo_split))
            rows_d: list[dict[str, Any]] = []
            if "d" in a.arms:
                more_start = time.time()

                async def more() -> None:
                    async with httpx.AsyncClient(timeout=300) as client:
                        await ask_and_rate(client, proxy, f"{SPEC}@1", train, taste, samples=4 * a.samples,
                                           max_tokens=max_tokens, seed=5000, complain_every=a.complain_every,
                                           concurrency=a.concurrency)  # fmt: skip

                asyncio.run(more())
                time.sleep(0.5)  # the ledger's batched write
                rows_d = asyncio.run(pairs_from_ledger(data, specs, [*windows, (more_start, time.time())], a.dpo_split))
    out["loop_seconds"] = round(time.monotonic() - started, 1)
    out["pairs"] = {"c": len(rows_c), "d": len(rows_d), "sources_c": dict(Counter(r["source"] for r in rows_c)),
                    "sources_d": dict(Counter(r["source"] for r in rows_d)), "split": a.dpo_split}  # fmt: skip
    say(f"pairs: {out['pairs']}")

    # -- the DPO arms ------------------------------------------------------------------------
    if "c" in a.arms or "d" in a.arms:
        policy = policy_of()
        conversations = [[{"role": "system", "content": ASSISTANT}, {"role": "user", "content": q}] for q in held]

        def answer() -> dict[str, Any]:
            ans = policy.answer(conversations, max_tokens)
            return measure(taste, [x.text for x in ans], [x.truncated for x in ans])

        out["arms"]["base_hf"] = answer()
        base_rep = out["arms"]["base_hf"]["repetition"]["share"]
        sweep: list[dict[str, Any]] = []
        train_c = training_rows(rows_c, ASSISTANT, a.limit_pairs)
        for lr in a.lrs if train_c and "c" in a.arms else []:
            say(f"DPO lr {lr:g} x {a.epochs:g} epoch(s) on {len(train_c)} pairs")
            t = policy.train(train_c, lr=lr, epochs=a.epochs, beta=a.beta)
            result = answer()
            policy.reset()
            sweep.append({"lr": lr, "epochs": a.epochs, "training": asdict(t), "arm": result})
            say(f"  rate {result['rate']:.2f}, repetition {result['repetition']['share']:.2f}, {t.seconds:.0f} s")
        best = best_fluent(sweep, base_rep, a.fluent_margin)
        out["sweep"] = sweep
        if best is not None:
            out["arms"]["c"] = {**best["arm"], "lr": best["lr"], "epochs": best["epochs"], "fluent": best["fluent"],
                                "training": best["training"]}  # fmt: skip
        train_d = training_rows(rows_d, ASSISTANT, 5 * a.limit_pairs if a.limit_pairs else None)
        if "d" in a.arms and train_d:
            lr = best["lr"] if best is not None else min(a.lrs)
            say(f"DPO 5x: lr {lr:g} on {len(train_d)} pairs")
            t = policy.train(train_d, lr=lr, epochs=a.epochs, beta=a.beta)
            out["arms"]["d"] = {**answer(), "lr": lr, "epochs": a.epochs, "training": asdict(t)}
            policy.reset()
            out["arms"]["d"]["fluent"] = out["arms"]["d"]["repetition"]["share"] <= base_rep + a.fluent_margin

    # -- spec vs DPO, judged -------------------------------------------------------------------
    out["pairwise"] = {}
    judge_calls = 0
    if a.judge_base_url and "b" in out["arms"]:
        for other in ("c", "d"):
            if other not in out["arms"]:
                continue
            verdicts: dict[str, Any] = {}
            for label, rule in (("preference", taste_rule(taste)), ("helpful", HELPFUL)):
                scores, calls = asyncio.run(judge_pairs(a.judge_base_url, a.judge_model, rule, held,
                                                        out["arms"]["b"]["answers"], out["arms"][other]["answers"]))  # fmt: skip
                judge_calls += calls
                verdicts[label] = {**pairwise_summary([forced_choice(x) for x in scores], scores), "rule": rule,
                                   "p_spec": [round(x, 3) for x in scores]}  # fmt: skip
            out["pairwise"][f"b_vs_{other}"] = verdicts
    out["judge_llm_calls"] = judge_calls
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


# -- report --------------------------------------------------------------------------------------
def _cell(x: dict[str, Any] | None) -> str:
    return fmt_arm(x) if x else "-"


def _win(p: dict[str, Any] | None) -> str:
    if not p or p["spec_win_rate"] is None:
        mean = f", mean P {p['mean_p_spec']:.2f}" if p and p.get("mean_p_spec") is not None else ""
        return "-" if not p else f"0/0 ({p['ties']} ties{mean})"
    lo, hi = p["wilson95"]
    mean = f", mean P {p['mean_p_spec']:.2f}" if p.get("mean_p_spec") is not None else ""
    return (
        f"{p['spec_wins']}/{p['spec_wins'] + p['dpo_wins']} = {p['spec_win_rate']:.2f} [{lo:.2f},{hi:.2f}] "
        f"({p['ties']} ties{mean})"
    )


def table(results: Sequence[dict[str, Any]]) -> str:
    lines = ["| preference | pairs c / d | a instruction | b compiled | base (transformers) | c DPO (lr) | d DPO 5x "
             "| spec vs DPO, by the preference | spec vs DPO, helpfulness |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        arms, pw = r["arms"], r.get("pairwise", {}).get("b_vs_c", {})
        c = arms.get("c")
        c_cell = f"{_cell(c)} ({c['lr']:g}{'' if c['fluent'] else ', not fluent'})" if c else "- (no pairs)"
        lines.append(f"| {r['taste']} | {r['pairs']['c']} / {r['pairs']['d'] or '-'} | {_cell(arms.get('a'))} "
                     f"| {_cell(arms.get('b'))} | {_cell(arms.get('base_hf'))} | {c_cell} | {_cell(arms.get('d'))} "
                     f"| {_win(pw.get('preference'))} | {_win(pw.get('helpful'))} |")  # fmt: skip
    lines += ["", "| preference | arm | mean words | repeated 4-gram | truncated | cost |", "|---|---|---|---|---|---|"]
    for r in results:
        for key in ("a", "b", "base_hf", "c", "d"):
            x = r["arms"].get(key)
            if x is None:
                continue
            if key == "b":
                cost = f"compile: {r['compile']['llm_calls']} LLM calls, {r['compile']['seconds']:.0f} s"
            elif "training" in x:
                t = x["training"]
                cost = f"DPO: {t['pairs']} pairs, {t['seconds']:.0f} s, peak RSS {t['peak_rss_mb'] / 1024:.1f} GB"
            else:
                cost = ""
            rep, cut = x["repetition"], x["truncated"]
            lines.append(f"| {r['taste']} | {key} {ARM_NAMES[key]} | {x['mean_words']:.0f} | {rep['n']}/{x['n']} "
                         f"| {cut['n']}/{x['n']} | {cost} |")  # fmt: skip
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------------
def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"a comma-separated list of numbers, not {text!r}") from exc


def _arms(text: str) -> list[str]:
    arms = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in arms if x not in ARMS]
    if bad or not arms:
        raise argparse.ArgumentTypeError(f"arms are a comma-separated subset of {','.join(ARMS)}, not {text!r}")
    return arms


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.learning.versus_dpo", description=__doc__.split("\n")[0])
    p.add_argument("--taste", action="append", choices=sorted(TASTES), help=f"repeatable; default: {', '.join(SEVEN)}")
    p.add_argument(
        "--arms", type=_arms, default=["a", "b", "c"], help="comma-separated subset of a,b,c,d (default a,b,c)"
    )
    p.add_argument("--limit-pairs", type=int, help="train arm c on at most this many pairs (arm d: 5x as many)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument(
        "--lrs", type=_floats, default=[5e-5, 2e-4], help="learning rates swept for arm c (default 5e-5,2e-4)"
    )
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta")
    p.add_argument("--fluent-margin", type=float, default=0.2,
                   help="fluent: repeated-4-gram share at most the untuned model's + this")  # fmt: skip
    p.add_argument("--dpo-split", choices=("train", "all"), default="all",
                   help="which of the compiler's pairs DPO trains on: all (default; the compiler uses the "
                   "held-out side to validate and gate) or its training side only")  # fmt: skip
    p.add_argument("--train", type=int, default=20, help="training questions (x --samples answers each)")
    p.add_argument("--eval", type=int, default=12, help="held-out questions")
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--complain-every", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--max-calls", type=int, default=160, help="LLM call budget of the compile round")
    p.add_argument("--judge-model", default="qwen2.5-coder-1.5b", help="embedded judge model ('none': no pairwise)")
    p.add_argument("--judge-base-url", help="the judge's endpoint instead of an embedded model")
    p.add_argument("--threads", type=int, default=2, help="torch threads for DPO training and answers")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    if a.train + a.eval > len(PROMPTS):
        p.error(f"--train + --eval must be at most {len(PROMPTS)}")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if {"c", "d"} & set(a.arms) and (missing := dpo_train.missing_packages()):
        print(f"error: bench.learning.versus_dpo needs the `dpo` extra ({', '.join(missing)} not installed): "
              f"{dpo_train.INSTALL}", file=sys.stderr)  # fmt: skip
        return 2
    from proxy.local_model import ensure_model
    from proxy.settings import Settings

    tastes = a.taste or list(SEVEN)
    results: list[dict[str, Any]] = []
    policy: list[Any] = []

    def policy_of() -> Any:
        if not policy:
            policy.append(dpo_train.Policy(ensure_model(s.local_model, s.model_cache_dir), threads=a.threads))
        return policy[0]

    def write() -> None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k not in ("out",)}
        load = policy[0].load_seconds if policy else None
        a.out.write_text(json.dumps({"results": results, "settings": settings, "model_load_seconds": load,
                                     "versions": _versions()}, indent=2))  # fmt: skip

    s = Settings()
    with embedded_models(a, s) as served_url:
        for name in tastes:
            results.append(run_taste(name, a, served_url, s.local_model, policy_of,
                                     lambda m, n=name: print(f"[{n}] {m}", file=sys.stderr, flush=True)))  # fmt: skip
            write()  # a partial report survives an interrupted run
    write()
    print(table(results))
    return 0


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("torch", "transformers", "peft", "trl", "accelerate", "gguf", "xllamacpp"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
