"""Which judge can a small local model be trusted as? Calibration accuracy of each judge kind on
each embedded model, on items whose answer is known.

Items: the compiler's shipped calibration set (`compiler/data/calibration.jsonl`: `menu` rules a
built-in check decides, `open` rules none can) and the ICAI orthogonal synthetic set
(`../shared/data/icai-synthetic`, 30 pairs whose annotator followed one hidden preference per
question: cats over dogs, blue over green, lemon over raspberry; the rule is written out for the
judge). Judges: pairwise (both orders), pointwise (each answer alone), and each calibrated
(scored leave-one-out over all items, as the compiler scores a round's calibration). Accuracy
counts the items where the judge sides with the known answer ("no opinion" is not right), with
Wilson 95% intervals; cost per judgment is LLM calls, tokens and seconds of one rule-pair verdict.

    python -m bench.learning.judges --out bench/results/judges.json          # both models, ~15 min
    python -m bench.learning.judges --model qwen2.5-coder-0.5b --limit 10   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

from compiler.calibration import shipped_items
from compiler.dataset import Example, Pair
from compiler.judge import (
    KINDS,
    CalibrationItem,
    fit_scale,
    make_judge,
    rescale,
    verdict,
)
from compiler.llm import Budget, LLMClient
from compiler.stats import wilson_lower

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "icai-synthetic"
ORTHOGONAL_RULES = {  # the preference each question's annotator followed, written out for the judge
    "Please write a funny short story about a human and their pet.": "Write stories about cats rather than dogs.",
    "Should I pick this blue t-shirt or the green one?": "Recommend the blue t-shirt rather than the green one.",
    "Which ice cream flavor should I pick?": "Recommend lemon ice cream rather than raspberry.",
}
MODELS = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")


def _split(text: str) -> tuple[str, str]:
    head, _, out = text.partition("\n\nOutput:")
    return head.removeprefix("Instruction:").strip(), out.strip()


def icai_items(path: Path) -> list[CalibrationItem]:
    items = []
    with path.open(newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh)):
            (qa, a), (_, b) = _split(row["text_a"]), _split(row["text_b"])
            chosen, rejected = (a, b) if row["preferred_text"] == "text_a" else (b, a)
            pair = Pair(f"icai{n}", Example(f"i{n}c", qa, chosen, 1.0), Example(f"i{n}r", qa, rejected, -1.0), "file")
            items.append(CalibrationItem(ORTHOGONAL_RULES[qa], pair, "icai", "icai-orthogonal"))
    return items


def wilson(right: int, n: int) -> list[float]:
    return [round(wilson_lower(right, n), 3), round(1 - wilson_lower(n - right, n), 3)] if n else [0.0, 1.0]


async def measure(base_url: str, model: str, items: list[CalibrationItem], kinds: list[str]) -> list[dict[str, Any]]:
    rows = []
    for kind in kinds:
        budget = Budget(10**9, 10**12)
        async with LLMClient(base_url, model, budget=budget, concurrency=2) as llm:
            judge = make_judge(kind, llm)
            started = time.monotonic()
            raw = await asyncio.gather(*(judge.by_rule(i.rule, i.pair, "calibrate") for i in items))
            seconds = time.monotonic() - started
        margins = [r - 0.5 for r in raw]
        for calibrated in (False, True):
            if calibrated:  # leave one out: each item judged with the scale fitted on the others
                right = [verdict(rescale(r, fit_scale(margins[:k] + margins[k + 1 :]))) > 0 for k, r in enumerate(raw)]
            else:
                right = [verdict(r) > 0 for r in raw]
            by: dict[str, list[int]] = {}
            for item, ok in zip(items, right, strict=True):
                by.setdefault(item.kind, [0, 0])
                by[item.kind][0] += ok
                by[item.kind][1] += 1
            open_right = sum(by.get(k, [0, 0])[0] for k in ("open", "icai"))
            open_n = sum(by.get(k, [0, 0])[1] for k in ("open", "icai"))
            rows.append({
                "model": model, "judge": kind + ("+calibrated" if calibrated else ""),
                "by_kind": {k: {"right": a, "n": n, "accuracy": round(a / n, 3), "wilson95": wilson(a, n)}
                            for k, (a, n) in by.items()},
                "menu": {"right": by.get("menu", [0, 0])[0], "n": by.get("menu", [0, 0])[1],
                         "wilson95": wilson(*by.get("menu", [0, 0]))},
                "non_menu": {"right": open_right, "n": open_n, "wilson95": wilson(open_right, open_n)},
                "all": {"right": sum(right), "n": len(right), "wilson95": wilson(sum(right), len(right))},
                "scale": round(fit_scale(margins), 2) if calibrated else None,
                # the sign alone (no "no opinion" band), ties half: comparable with a coin's 0.5
                "sign_accuracy": round(sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins) / len(margins), 3),
                "llm_calls": budget.calls, "tokens": budget.tokens,
                "calls_per_judgment": round(budget.calls / len(items), 2),
                "tokens_per_judgment": round(budget.tokens / len(items), 1),
                "seconds_per_judgment": round(seconds / len(items), 3),
            })  # fmt: skip
    return rows


def fmt(x: dict[str, Any]) -> str:
    n = x["n"]
    if not n:
        return "-"
    lo, hi = x["wilson95"]
    return f"{x['right']}/{n} = {x['right'] / n:.2f} [{lo:.2f},{hi:.2f}]"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | judge | menu rules | non-menu rules (shipped + ICAI) | ICAI orthogonal | sign only "
             "| tokens / s per judgment |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        icai = r["by_kind"].get("icai")
        icai_cell = fmt({"right": icai["right"], "n": icai["n"], "wilson95": icai["wilson95"]}) if icai else "-"
        lines.append(f"| {r['model']} | {r['judge']} | {fmt(r['menu'])} | {fmt(r['non_menu'])} | {icai_cell} "
                     f"| {r['sign_accuracy']:.2f} "
                     f"| {r['tokens_per_judgment']:.0f} / {r['seconds_per_judgment']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.learning.judges", description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", choices=MODELS, help="repeatable; default: both")
    p.add_argument("--kind", action="append", choices=sorted(KINDS), help="repeatable; default: both")
    p.add_argument("--limit", type=int, help="at most this many items of each source")
    p.add_argument("--no-icai", action="store_true", help="leave the ICAI items out")
    p.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: cores - 1)")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    shipped = list(shipped_items())
    icai = [] if a.no_icai else icai_items(SHARED / "synthetic_data_orthogonal_adcbg.csv")
    items = shipped[: a.limit] + icai[: a.limit] if a.limit else shipped + icai
    from proxy.local_model import LocalModelSupervisor
    from proxy.settings import Settings

    rows: list[dict[str, Any]] = []
    for model in a.model or list(MODELS):
        print(f"[{model}] {len(items)} items", file=sys.stderr, flush=True)
        with LocalModelSupervisor.from_settings(Settings(), model=model, threads=a.threads, parallel=2) as server:
            rows += asyncio.run(measure(server.base_url, model, items, a.kind or sorted(KINDS)))
        if a.out:
            a.out.write_text(json.dumps({"rows": rows, "items": len(items)}, indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
