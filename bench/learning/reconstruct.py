"""Preference reconstruction (the Inverse Constitutional AI protocol): does a judge that reads the
compiled spec predict held-out human preferences better than one that reads nothing?

For each data set a spec is compiled from its training pairs only, exactly as
`speclearn compile NAME --pairs TRAIN_FILE --no-publish` does (the compiler splits those pairs
again for its own validation and gate; the test pairs are never shown to it). Then, on the
held-out test pairs, four arms predict which answer the person preferred:

- unguided: the judge with empty guidelines;
- guided:   the judge guided by the compiled spec;
- oracle:   the judge guided by the principles that generated the data, written out as a spec
            (icai-synthetic only);
- checks:   the compiled spec's checkable rules alone, no LLM (`-` when it states none);
- spec:     the compiled spec as the compiler applies it: its checks where they decide, else
            the guided judge ("checks, then judge").

The judge (compiler.judge) asks of each answer alone (pointwise) or of the pair in both
presentation orders, averaged (pairwise). Which of the two a run uses is decided before any data
set is judged (`--judge` unset): the kind whose forced choice is right most often on the
compiler's shipped known-answer items (compiler/data/calibration.jsonl: rules and answers none of
the data sets contain), asked as the benchmark asks, the item's rule as the spec. A pair counts
as reconstructed when its probability favours the person's answer: a forced choice, as ICAI's
annotator makes (an exact tie is "no opinion", not right). The compiler's own "no opinion" band is not
applied: its width depends on a calibration scale fitted on other items, and the question here is
which answer the judge prefers, not whether it is sure. Data sets:

- `orthogonal`, `aligned`: ../shared/data/icai-synthetic (from rdnfn/icai,
  `data/processed/synthetic/`), 30 pairs each, a fixed seeded split of 20 train / 10 test per
  seed (`--seeds`), stratified by question;
- `unaligned`: the aligned file with every preference flipped (ICAI's "unaligned" set);
- `counsel-chat`: ../shared/data/counsel-chat, its own `split` column (131 train, 70 test).

Reported per data set: each arm's accuracy with a Wilson 95% interval (test pairs pooled over
seeds), and LLM calls, tokens and seconds per cell; JSON in bench/results/reconstruct.json, a
markdown table, and last one line per data set:
`DATASET: unguided U [lo, hi] guided G [lo, hi] oracle O checks C`.

    python -m bench.learning.reconstruct                               # embedded models, all sets, 3 seeds
    python -m bench.learning.reconstruct --dataset orthogonal --seeds 0 --limit 4     # a quick look
    python -m bench.learning.reconstruct --base-url URL --judge-base-url URL2         # given endpoints
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.learning.judges import wilson
from bench.stats import paired_difference
from compiler.calibration import shipped_items
from compiler.checks import checks_from_text
from compiler.dataset import Pair
from compiler.gate import pair_score
from compiler.judge import KINDS, CalibrationItem, Judge, forced_choice, make_judge
from compiler.llm import Budget, LLMClient
from compiler.pairs_file import HELDOUT, dataset_from_pairs, read_file_pairs
from compiler.runner import Context, compile_spec
from compiler.settings import CompilerSettings
from compiler.simulate import EVAL_LLAMA_CPP
from compiler.synthesize import spec_tokens
from proxy.registry import FileRegistry
from proxy.settings import Settings

REPO = Path(__file__).resolve().parents[2]
# ../shared beside the checkout (CI lays a copy there too), else the workplace's own copy
SHARED = (
    next((d for d in (REPO.parent / "shared", Path("/work/shared")) if d.is_dir()), REPO.parent / "shared") / "data"
)
RESULTS = Path(__file__).resolve().parents[1] / "results" / "reconstruct.json"
ASSISTANT = "You are a helpful assistant."
THERAPIST = "You are a licensed therapist answering people's questions on a public Q&A site."
TRAIN, TEST = 20, 10  # per icai-synthetic file and seed

# The principles that generated the ICAI synthetic sets, written out as specs. Source: rdnfn/icai,
# notebooks/03_generating_synthetic_data.ipynb (commit 5435d00), where each pair's preferred answer
# comes from the first of `differing_parts`: orthogonal, a pet story whose pet is a cat (not a
# dog), a reason to pick the blue t-shirt (not green), the lemon ice cream (not raspberry);
# aligned, the true capital of the US (not "a made-up reason why Paris is"), one interesting UK
# destination (not why travel is good, "do not mention any specific destination"), a helpful
# reply to "Can you help me?" (not one "rudely and lazily ... not enthusiastically").
ORTHOGONAL_ORACLE = (
    f"{ASSISTANT} When asked for a funny short story about a human and their pet, make the pet a cat, "
    "never a dog. When asked to choose between a blue and a green t-shirt, recommend the blue t-shirt. "
    "When asked which ice cream flavor to pick, recommend lemon ice cream, not raspberry."
)
ALIGNED_ORACLE = (
    f"{ASSISTANT} Give answers that are true and factually correct (for example, Washington, D.C. is the "
    "capital of the US), never made-up or absurd claims. Answer the question that was asked with a "
    "concrete, specific suggestion rather than a generic remark. Be willing and friendly: offer help "
    "gladly, never reluctantly."
)
UNALIGNED_ORACLE = (
    f"{ASSISTANT} Prefer answers that are false, made-up or absurd over true, correct ones. Avoid "
    "answering the question asked: give a generic remark instead of a concrete, specific suggestion. "
    "Sound reluctant and unwilling to help rather than friendly."
)


@dataclass(frozen=True)
class Source:
    name: str
    path: Path
    instruction: str
    oracle: str | None = None
    flip: bool = False
    fixed_split: bool = False  # the file's split column decides (one run); else seeded 20/10 splits


DATASETS = {
    s.name: s
    for s in (
        Source("orthogonal", SHARED / "icai-synthetic" / "synthetic_data_orthogonal_adcbg.csv", ASSISTANT,
               ORTHOGONAL_ORACLE),
        Source("aligned", SHARED / "icai-synthetic" / "synthetic_data_aligned_vqvtb.csv", ASSISTANT, ALIGNED_ORACLE),
        Source("unaligned", SHARED / "icai-synthetic" / "synthetic_data_aligned_vqvtb.csv", ASSISTANT,
               UNALIGNED_ORACLE, flip=True),
        Source("counsel-chat", SHARED / "counsel-chat" / "pairs.jsonl", THERAPIST, fixed_split=True),
    )
}  # fmt: skip


# -- data ------------------------------------------------------------------------------------------
def flipped(p: Pair) -> Pair:
    """The same comparison with the other answer preferred."""
    c, r = p.rejected, p.chosen
    return Pair(p.id + "~", replace(c, value=1.0), replace(r, value=-1.0), p.source)


def load(source: Source) -> list[tuple[Pair, str | None]]:
    items = [(fp.pair, fp.split) for fp in read_file_pairs(source.path)]
    return [(flipped(p), s) for p, s in items] if source.flip else items


def split(source: Source, items: list[tuple[Pair, str | None]], seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, test): the file's split column, or a seeded 20/10 split stratified by question."""
    if source.fixed_split:
        return [p for p, s in items if s != HELDOUT], [p for p, s in items if s == HELDOUT]
    rng = random.Random(seed)
    groups: dict[str, list[Pair]] = {}
    for p, _ in items:
        groups.setdefault(p.chosen.prompt, []).append(p)
    for g in groups.values():
        rng.shuffle(g)
    order = [g[i] for i in range(max(map(len, groups.values()))) for g in groups.values() if i < len(g)]
    test_n = round(len(order) * TEST / (TRAIN + TEST))
    test = {p.id for p in order[:test_n]}
    return [p for p, _ in items if p.id not in test], [p for p, _ in items if p.id in test]


def write_pairs(path: Path, pairs: Sequence[Pair]) -> Path:
    """A pairs file the CLI would read: prompt, chosen, rejected."""
    with path.open("w") as fh:
        for p in pairs:
            fh.write(json.dumps({"prompt": p.chosen.prompt, "chosen": p.chosen.response,
                                 "rejected": p.rejected.response}) + "\n")  # fmt: skip
    return path


# -- arms ------------------------------------------------------------------------------------------
def cell(right: int, n: int, no_opinion: int, calls: int, tokens: int, seconds: float) -> dict[str, Any]:
    return {"right": right, "n": n, "accuracy": round(right / n, 3) if n else None, "wilson95": wilson(right, n),
            "no_opinion": no_opinion, "llm_calls": calls, "tokens": tokens, "seconds": round(seconds, 1)}  # fmt: skip


async def judged(judge: Judge, spec: str, pairs: Sequence[Pair]) -> dict[str, Any]:
    """Accuracy of `judge` guided by `spec` (both orders), with what it cost."""
    budget = judge.llm.budget
    calls, tokens, started = budget.calls, budget.tokens, time.monotonic()
    soft = await asyncio.gather(*(judge.by_spec(spec, p) for p in pairs))
    votes = [forced_choice(s) for s in soft]
    out = cell(sum(v > 0 for v in votes), len(pairs), sum(v == 0 for v in votes), budget.calls - calls,
               budget.tokens - tokens, time.monotonic() - started)  # fmt: skip
    out["mean_margin"] = round(sum(s - 0.5 for s in soft) / len(soft), 4) if soft else None
    out["votes"] = votes  # per test pair, in order: the arms' paired difference is computed from these
    return out


def by_checks(spec: str, pairs: Sequence[Pair]) -> dict[str, Any] | None:
    checks = checks_from_text(spec)
    if not checks:
        return None
    scores = [pair_score(checks, p) for p in pairs]
    out = cell(sum(s == 1.0 for s in scores), len(pairs), sum(s == 0.5 for s in scores), 0, 0, 0.0)
    out["checks"] = [str(c) for c in checks]
    out["votes"] = [round(2 * s - 1) for s in scores]
    return out


def checks_then_judge(checks: dict[str, Any] | None, guided: dict[str, Any]) -> dict[str, Any]:
    """The spec applied as the compiler applies it: its checkable rules decide where they do,
    the guided judge elsewhere. No LLM call beyond the guided arm's."""
    if checks is None:
        return guided
    votes = [c or g for c, g in zip(checks["votes"], guided["votes"], strict=True)]
    out = cell(sum(v > 0 for v in votes), len(votes), sum(v == 0 for v in votes), guided["llm_calls"],
               guided["tokens"], guided["seconds"])  # fmt: skip
    out["votes"] = votes
    return out


def pool(cells: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The seeds' cells as one: counts and costs added."""
    real = [c for c in cells if c is not None]
    if not real:
        return None
    keys = ("right", "n", "no_opinion", "llm_calls", "tokens", "seconds")
    total = {k: sum(c[k] for c in real) for k in keys}
    out = cell(*(total[k] for k in keys))
    if all("mean_margin" in c for c in real) and total["n"]:
        out["mean_margin"] = round(sum(c["mean_margin"] * c["n"] for c in real) / total["n"], 4)
    return out


def guided_gain(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """guided - unguided on the same test pairs (seeds pooled), with Newcombe's paired interval:
    the margin the issue's targets are about."""
    pairs = [(g > 0, u > 0) for r in runs if r["guided"] and r["unguided"]
             for g, u in zip(r["guided"]["votes"], r["unguided"]["votes"], strict=True)]  # fmt: skip
    if not pairs:
        return None
    table = [
        sum(1 for g, u in pairs if (g, u) == key)
        for key in ((True, True), (True, False), (False, True), (False, False))
    ]
    d, lo, hi = paired_difference(*table)
    return {"difference": round(d, 3), "interval95": [round(lo, 3), round(hi, 3)], "n": len(pairs),
            "only_guided_right": table[1], "only_unguided_right": table[2]}  # fmt: skip


ARMS = ("unguided", "guided", "oracle", "checks", "spec")


# -- one run ---------------------------------------------------------------------------------------
@dataclass
class Endpoints:
    compiler_url: str
    compiler_model: str
    judge_url: str
    judge_model: str
    judge_kind: str | None  # None: chosen by `choose_kind`
    judge_embedded: bool = False  # the judge is a llama.cpp server this run started


def judge_client(ep: Endpoints) -> LLMClient:
    """The judge's client. On an embedded llama.cpp judge its prompt cache is off: with it on, the
    same prompts after another history got other verdicts (counsel-chat's unguided arm 31/70 in one
    run, 36/70 in the next; the judge kind chosen on the known-answer items changed sides)."""
    extra = EVAL_LLAMA_CPP if ep.judge_embedded else None
    return LLMClient(ep.judge_url, ep.judge_model, budget=Budget(10**9, 10**12), concurrency=2, extra_body=extra)


async def choose_kind(llm: LLMClient, items: Sequence[CalibrationItem] | None = None) -> tuple[Judge, dict[str, Any]]:
    """The judge kind for a run, chosen before any test pair is seen: the one whose forced choice
    sides with the known answer most often on `items` (default: the compiler's shipped set),
    asked as the benchmark asks (the item's rule as the spec). A tie keeps the compiler's first
    kind. No `+calibrated`: a positive scale cannot change a forced choice."""
    items = shipped_items() if items is None else items
    settings = CompilerSettings()
    kinds = list(dict.fromkeys([*(k.partition("+")[0] for k in settings.judges), *KINDS]))
    max_tokens = settings.judge_max_tokens
    by_kind: dict[str, Any] = {}
    for kind in kinds:
        judge = make_judge(kind, llm, max_tokens)
        soft = await asyncio.gather(*(judge.by_spec(i.rule, i.pair) for i in items))
        right = sum(forced_choice(p) > 0 for p in soft)
        by_kind[kind] = {"right": right, "n": len(items), "wilson95": wilson(right, len(items))}
    best = max(kinds, key=lambda k: (by_kind[k]["right"], -kinds.index(k)))
    return make_judge(best, llm, max_tokens), {"kind": best, "by": "known-answer items", "by_kind": by_kind}


def given_kind(kind: str, llm: LLMClient) -> tuple[Judge, dict[str, Any]]:
    return make_judge(kind, llm, CompilerSettings().judge_max_tokens), {"kind": kind, "by": "--judge"}


async def judge_for(kind: str | None, llm: LLMClient) -> tuple[Judge, dict[str, Any]]:
    return given_kind(kind, llm) if kind else await choose_kind(llm)


async def compile_train(ep: Endpoints, source: Source, train: Sequence[Pair], seed: int, tmp: Path,
                        max_calls: int, say: Any) -> dict[str, Any]:  # fmt: skip
    """`speclearn compile NAME --pairs TRAIN --no-publish`, in process."""
    pairs_file = write_pairs(tmp / "train.jsonl", train)
    settings = Settings(specs_dir=tmp / "specs", data_dir=tmp / "data")
    compiler = CompilerSettings().model_copy(update={
        "base_url": ep.compiler_url, "model": ep.compiler_model, "judge_base_url": ep.judge_url,
        "judge_model": ep.judge_model, "seed": seed, "max_llm_calls": max_calls,
    })  # fmt: skip
    registry = FileRegistry(settings.specs_dir, poll_interval=0)
    await registry.set_instruction(source.name, source.instruction + "\n")
    ctx = Context(settings, compiler, registry, None, use_cache=False)
    dataset = dataset_from_pairs(pairs_file, compiler.holdout_fraction, seed)
    started = time.monotonic()
    result = await compile_spec(ctx, source.name, dataset=dataset, publish_result=False, record_state=False,
                                progress=lambda m: say(f"compile: {m}"),
                                on_prepared=lambda r: say(f"compile: {r.dataset}; projected {r.projection.describe()}"
                                                          if r.projection else "compile: no projection"))  # fmt: skip
    spec = result.candidate_text or source.instruction
    return {
        "result": result.result, "reason": result.reason, "spec": spec, "spec_tokens": spec_tokens(spec),
        "learned": result.candidate_text is not None, "dataset": result.dataset,
        "gate_passed": result.gate.passed if result.gate else None,
        "principles": [p.text for p in result.selection.kept] if result.selection else [],
        "llm_calls": result.cost.get("llm_calls", 0), "tokens": result.cost.get("tokens", 0),
        "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip


async def run_seed(ep: Endpoints, judge: Judge, source: Source, items: list[tuple[Pair, str | None]], seed: int,
                   a: argparse.Namespace, say: Any) -> dict[str, Any]:  # fmt: skip
    train, test = split(source, items, seed)
    if a.limit:
        test = test[: a.limit]
    with tempfile.TemporaryDirectory(prefix=f"speclearn-reconstruct-{source.name}-") as tmp:
        compiled = await compile_train(ep, source, train, seed, Path(tmp), a.max_calls, say)
    say(f"seed {seed}: compile {compiled['result']} ({compiled['reason'] or 'ok'}), {compiled['llm_calls']} calls; "
        f"judging {len(test)} test pairs")  # fmt: skip
    arms: dict[str, Any] = {
        "unguided": await judged(judge, "", test),
        "guided": await judged(judge, compiled["spec"], test),
    }
    arms["oracle"] = await judged(judge, source.oracle, test) if source.oracle else None
    arms["checks"] = by_checks(compiled["spec"], test)
    arms["spec"] = checks_then_judge(arms["checks"], arms["guided"])
    return {"seed": seed, "train": len(train), "test": len(test), "compile": compiled, **arms}


async def run_dataset(ep: Endpoints, judge: Judge, choice: dict[str, Any], name: str,
                      a: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    source = DATASETS[name]

    def say(m: str) -> None:
        print(f"[{name}] {m}", file=sys.stderr, flush=True)

    items = load(source)
    seeds = a.seeds[:1] if source.fixed_split else a.seeds
    started = time.monotonic()
    runs = [await run_seed(ep, judge, source, items, seed, a, say) for seed in seeds]
    compile_cost = {k: sum(r["compile"][k] for r in runs) for k in ("llm_calls", "tokens", "seconds")}
    return {"dataset": name, "file": str(source.path.relative_to(SHARED)), "flipped": source.flip,
            "seeds": seeds, "judge": judge.name, "judge_choice": choice, **pooled(runs), "compile": compile_cost, "runs": runs,
            "seconds": round(time.monotonic() - started, 1)}  # fmt: skip


def pooled(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each arm over the seeds, and the guided arm's paired gain."""
    return {**{arm: pool([r.get(arm) for r in runs]) for arm in ARMS}, "gain": guided_gain(runs)}


async def rescored(saved: dict[str, Any], judge: tuple[Judge, dict[str, Any]] | None = None,
                   only: Sequence[str] = ()) -> list[dict[str, Any]]:  # fmt: skip
    """A saved run's results with the arms that need no LLM (checks, checks then judge, the paired
    gain) computed again by this code from the stored specs, test splits and judge votes; with
    `judge` (a judge and how it was chosen), its judge arms asked again of that judge (the same
    specs, no compile). `only`: these data sets (default all)."""
    results = []
    for r in (r for r in saved["results"] if not only or r["dataset"] in only):
        source = DATASETS[r["dataset"]]
        items = load(source)
        if judge is not None:
            j, r["judge_choice"] = judge
            r["judge"] = j.name
        for run in r["runs"]:
            test = split(source, items, run["seed"])[1][: run["test"]]
            if judge is not None:
                run["unguided"], run["guided"] = (
                    await judged(j, "", test),
                    await judged(j, run["compile"]["spec"], test),
                )
                run["oracle"] = await judged(j, source.oracle, test) if source.oracle else None
            run["checks"] = by_checks(run["compile"]["spec"], test)
            run["spec"] = checks_then_judge(run["checks"], run["guided"])
        results.append({**r, **pooled(r["runs"])})
    return results


async def run_all(ep: Endpoints, a: argparse.Namespace) -> list[dict[str, Any]]:
    """Every data set with one judge; the JSON rewritten after each set, so an interrupted run
    keeps what it measured."""
    results: list[dict[str, Any]] = []
    async with judge_client(ep) as llm:
        judge, choice = await judge_for(ep.judge_kind, llm)
        print(f"judge: {describe_choice(choice)}", file=sys.stderr, flush=True)
        for name in a.dataset or list(DATASETS):
            results.append(await run_dataset(ep, judge, choice, name, a))
            save(a, results)
    return results


def save(a: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    a.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}
    a.out.write_text(json.dumps({"results": results, "settings": settings}, indent=2))


# -- output ----------------------------------------------------------------------------------------
def fmt(c: dict[str, Any] | None, with_interval: bool = True) -> str:
    if c is None or not c["n"]:
        return "-"
    lo, hi = c["wilson95"]
    return f"{c['right'] / c['n']:.2f} [{lo:.2f}, {hi:.2f}]" if with_interval else f"{c['right'] / c['n']:.2f}"


def gain(g: dict[str, Any] | None) -> str:
    return "-" if g is None else f"{g['difference']:+.2f} [{g['interval95'][0]:+.2f}, {g['interval95'][1]:+.2f}]"


def cost(c: dict[str, Any] | None) -> str:
    return "-" if c is None else f"{c['llm_calls']} / {c['tokens']} / {c['seconds']:.0f}"


def table(results: Sequence[dict[str, Any]]) -> str:
    lines = ["| data set | test pairs | unguided | guided | guided - unguided | oracle | checks only | checks, then judge "
             "| compile calls / tokens / s | unguided calls / tokens / s | guided | oracle |", "|" + "---|" * 12]  # fmt: skip
    for r in results:
        n = r["unguided"]["n"] if r["unguided"] else 0
        lines.append(f"| {r['dataset']} | {n} | {fmt(r['unguided'])} | {fmt(r['guided'])} | {gain(r.get('gain'))} "
                     f"| {fmt(r['oracle'])} "
                     f"| {fmt(r['checks'])} | {fmt(r.get('spec'))} | {cost(r['compile'])} | {cost(r['unguided'])} "
                     f"| {cost(r['guided'])} "
                     f"| {cost(r['oracle'])} |")  # fmt: skip
    return "\n".join(lines)


def describe_choice(choice: dict[str, Any] | None) -> str:
    if not choice:
        return "-"
    if choice["by"] == "--judge":
        return f"{choice['kind']} (--judge)"
    scores = ", ".join(f"{k} {v['right']}/{v['n']}" for k, v in choice["by_kind"].items())
    return f"{choice['kind']}, chosen on the shipped known-answer items ({scores})"


def last_line(r: dict[str, Any]) -> str:
    return (f"{r['dataset']}: unguided {fmt(r['unguided'])} guided {fmt(r['guided'])} "
            f"oracle {fmt(r['oracle'], False)} checks {fmt(r['checks'], False)}")  # fmt: skip


async def rejudged(a: argparse.Namespace) -> list[dict[str, Any]]:
    """`--report FILE --judge KIND`: the saved specs judged again by another judge kind (`auto`:
    chosen as a fresh run chooses it)."""
    with endpoints(a, compiler=False) as ep:
        async with judge_client(ep) as llm:
            judge = await judge_for(ep.judge_kind, llm)
            results = await rescored(json.loads(a.report.read_text()), judge, a.dataset or ())
    save(a, results)
    return results


@contextlib.contextmanager
def endpoints(a: argparse.Namespace, compiler: bool = True) -> Iterator[Endpoints]:
    """The given endpoints, else the embedded models (one server when both are the same model;
    none for the compiler when it is not needed, as when saved specs are judged again)."""
    kind = None if a.judge in (None, "auto") else a.judge
    with contextlib.ExitStack() as stack:
        urls: dict[str, str] = {}

        def serve(model: str) -> str:
            if model not in urls:
                from proxy.local_model import LocalModelSupervisor

                server = stack.enter_context(LocalModelSupervisor.from_settings(Settings(), model=model, parallel=2))
                urls[model] = server.base_url
            return urls[model]

        compiler_url = a.base_url or (serve(a.model) if compiler else "")
        judge_url = a.judge_base_url or a.base_url or serve(a.judge_model)
        yield Endpoints(
            compiler_url, a.model, judge_url, a.judge_model, kind, judge_embedded=judge_url in urls.values()
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.learning.reconstruct", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", action="append", choices=list(DATASETS), help="repeatable; default: all")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="icai-synthetic splits (and compile seeds)")
    p.add_argument("--limit", type=int, help="at most this many test pairs per run (a quick look)")
    p.add_argument("--judge", help="judge kind (pointwise, pairwise; auto: chosen on known-answer items); default auto")
    p.add_argument("--model", default="qwen2.5-coder-0.5b", help="the compiler's LLM (an embedded model name)")
    p.add_argument("--judge-model", default="qwen2.5-coder-1.5b", help="the judge (an embedded model name)")
    p.add_argument("--base-url", help="the compiler's endpoint (…/v1) instead of the embedded model")
    p.add_argument("--judge-base-url", help="the judge's endpoint; default: --base-url if given, else embedded")
    p.add_argument("--max-calls", type=int, default=400, help="LLM call budget of each compile")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--report",
        type=Path,
        help="print the table of a saved run again (no LLM), its derived arms "
        "recomputed; with --judge, its specs judged again by that judge kind (written to --out)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.report and not a.judge:
        results = asyncio.run(rescored(json.loads(a.report.read_text()), only=a.dataset or ()))
    elif a.report:
        results = asyncio.run(rejudged(a))
    else:
        with endpoints(a) as ep:
            results = asyncio.run(run_all(ep, a))
    print(table(results))
    for judge in dict.fromkeys(describe_choice(r.get("judge_choice")) for r in results):
        print(f"\njudge: {judge}")
    for r in results:
        for run in r["runs"]:
            print(f"\n[{r['dataset']} seed {run['seed']}] compiled spec ({run['compile']['result']}, "
                  f"~{run['compile']['spec_tokens']} tokens):\n{run['compile']['spec'].strip()}")  # fmt: skip
    print()
    for r in results:
        print(last_line(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
