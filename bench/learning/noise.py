"""Can feedback with no taste behind it publish a spec? The gate's false-publish rate, measured.

Each round builds 40 feedback events on real answers of the embedded model (a pool generated
once: every question of `compiler.simulate.PROMPTS` answered several times at temperature 0.8)
and runs one compile round on them, exactly as `speclearn compile` does. Scenarios:

- `coin`: seven users whose thumbs are biased coins (each user's bias drawn from 0.3..0.8), 40 events;
- `flood`: five such users (24 events) plus one user who down-votes 16 answers with the same comment;
- `taste:NAME`: the same users voting by a hidden taste of bench.learning.quality (the power side: how
  often a real taste still gets through with the same amount of feedback).

The compiler's LLM is either the embedded model (`--llm local`: real proposals, real judge; a
few rounds, minutes each) or a scripted one (`--llm fake`, tests/fake_llm.py: it proposes a fixed
set of plausible rules and judges checkable rules perfectly, so it passes calibration; hundreds
of rounds a minute). Either way evidence mining, validation and the gate are the real code.
Reported: rounds published with a Wilson 95% interval, against the gate's alpha. Last line:
`noise: published P of N rounds (alpha A)`.

    python -m bench.learning.noise --out bench/results/noise.json               # fake LLM, 300 rounds each
    python -m bench.learning.noise --llm local --rounds 10 --scenario coin      # the real model
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from compiler import prompts
from compiler.dataset import build_dataset
from compiler.llm import LLMClient, run_all
from compiler.runner import Context, compile_spec
from compiler.settings import CompilerSettings
from compiler.simulate import ASSISTANT, PROMPTS, TASTES
from compiler.stats import wilson_lower
from proxy.ledger import FeedbackEvent, FeedbackRecord, InferenceRecord
from proxy.registry import FileRegistry
from proxy.settings import Settings

POOL = Path(__file__).resolve().parents[1] / "results" / "noise-pool.json"
FLOOD_COMMENT = "not what I wanted, say it differently"


async def make_pool(base_url: str, samples: int, max_tokens: int) -> list[dict[str, str]]:
    async with LLMClient(base_url, "local", temperature=0.8, concurrency=2) as llm:
        jobs = [(q, s) for q in PROMPTS for s in range(samples)]
        texts = await run_all(llm.chat(prompts.answer(ASSISTANT, q), max_tokens=max_tokens, seed=s, stage="pool")
                              for q, s in jobs)  # fmt: skip
    return [{"prompt": q, "answer": t} for (q, _), t in zip(jobs, texts, strict=True)]


def events(pool: list[dict[str, str]], scenario: str, rng: random.Random) -> list[FeedbackEvent]:
    """40 feedback events on answers drawn from the pool, voted as the scenario says."""
    taste = TASTES[scenario.split(":", 1)[1]] if scenario.startswith("taste:") else None
    users = [(f"u{i}", rng.uniform(0.3, 0.8)) for i in range(7 if scenario != "flood" else 5)]
    votes: list[tuple[str, dict[str, str], bool, str | None]] = []
    n_coin = 40 if scenario != "flood" else 24
    for k in range(n_coin):
        user, bias = users[k % len(users)]
        item = rng.choice(pool)
        up = taste.likes(item["answer"]) if taste else rng.random() < bias
        votes.append((user, item, up, None))
    if scenario == "flood":
        votes += [("flooder", rng.choice(pool), False, FLOOD_COMMENT) for _ in range(16)]
    rng.shuffle(votes)
    out = []
    for n, (user, item, up, comment) in enumerate(votes):
        at = 1_700_000_000.0 + 60 * n
        inf = InferenceRecord(f"i{n}", at, "chat", "local", "noise", 1, "h",
                              {"model": "local", "messages": [{"role": "user", "content": item["prompt"]}]},
                              item["answer"], metadata={"user": user})  # fmt: skip
        fb = FeedbackRecord(f"f{n}", inf.id, "thumb", 1.0 if up else -1.0, at + 1, comment)
        out.append(FeedbackEvent(fb, inf))
    return out


async def one_round(pool: list[dict[str, str]], scenario: str, seed: int, llm: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(seed)
    ds = build_dataset(events(pool, scenario, rng))
    with tempfile.TemporaryDirectory(prefix="speclearn-noise-") as tmp:
        registry = FileRegistry(Path(tmp) / "specs", poll_interval=0)
        await registry.set_instruction("noise", ASSISTANT + "\n")
        await registry.publish("noise", ASSISTANT, labels=["production"])
        settings = Settings(specs_dir=Path(tmp) / "specs", data_dir=Path(tmp) / "data")
        compiler = CompilerSettings(seed=seed, **llm["overrides"])
        ctx = Context(settings, compiler, registry, None, transport=llm.get("transport"), use_cache=llm["cache"])
        result = await compile_spec(ctx, "noise", dataset=ds, record_state=False)
    return {"seed": seed, "result": str(result.result), "reason": result.reason[:300],
            "spec": result.candidate_text if result.result == "published" else None,
            "p_value": None if result.gate is None else round(min(result.gate.p_value, 1.0), 5)}  # fmt: skip


def summary(scenario: str, rows: list[dict[str, Any]], alpha: float) -> dict[str, Any]:
    n, k = len(rows), sum(r["result"] == "published" for r in rows)
    results: dict[str, int] = {}
    for r in rows:
        results[r["result"]] = results.get(r["result"], 0) + 1
    return {"scenario": scenario, "rounds": n, "published": k, "rate": round(k / n, 4) if n else 0.0,
            "wilson95": [round(wilson_lower(k, n), 4), round(1 - wilson_lower(n - k, n), 4)] if n else [0, 1],
            "alpha": alpha, "results": results,
            "published_specs": [r["spec"] for r in rows if r["spec"]][:5]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.learning.noise", description=__doc__.split("\n")[0])
    p.add_argument("--llm", choices=["fake", "local"], default="fake")
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--scenario", action="append", help="coin, flood, taste:NAME (repeatable); "
                   "default: coin, flood and the tastes short, no_phrase, example, reason")  # fmt: skip
    p.add_argument("--samples", type=int, default=3, help="answers per question in the pool")
    p.add_argument("--pool", type=Path, default=POOL, help="answer pool (made with the local model if missing)")
    p.add_argument("--judge-model", default="qwen2.5-coder-1.5b", help="--llm local: the judge's embedded model")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    scenarios = a.scenario or ["coin", "flood", "taste:short", "taste:no_phrase", "taste:example", "taste:reason"]
    from proxy.local_model import LocalModelSupervisor

    started = time.monotonic()
    servers: list[LocalModelSupervisor] = []
    try:
        if not a.pool.exists() or a.llm == "local":
            servers.append(LocalModelSupervisor.from_settings(Settings(), parallel=2))
            base_url = servers[0].start()
        if not a.pool.exists():
            print(f"making the answer pool ({len(PROMPTS)} x {a.samples} answers)", file=sys.stderr, flush=True)
            a.pool.parent.mkdir(parents=True, exist_ok=True)
            a.pool.write_text(json.dumps(asyncio.run(make_pool(base_url, a.samples, 80)), indent=1))
        pool = json.loads(a.pool.read_text())
        if a.llm == "fake":
            sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
            from tests.fake_llm import FakeLLM

            llm: dict[str, Any] = {"overrides": {"base_url": "http://fake/v1"}, "transport": FakeLLM().transport,
                                   "cache": False}  # fmt: skip
        else:
            judge = LocalModelSupervisor.from_settings(Settings(), model=a.judge_model, parallel=2)
            servers.append(judge)
            llm = {"overrides": {"base_url": base_url, "judge_base_url": judge.start(), "judge_model": a.judge_model,
                                 "max_llm_calls": 120, "proposal_passes": 2, "proposal_sample": 8},
                   "cache": True}  # fmt: skip
        alpha = CompilerSettings().gate_alpha
        report: list[dict[str, Any]] = []
        for scenario in scenarios:
            rows = [asyncio.run(one_round(pool, scenario, seed, llm)) for seed in range(a.rounds)]
            report.append({**summary(scenario, rows, alpha), "rows": rows})
            s = report[-1]
            print(f"{scenario}: published {s['published']}/{s['rounds']} = {s['rate']:.3f} "
                  f"[{s['wilson95'][0]:.3f}, {s['wilson95'][1]:.3f}] {s['results']}", file=sys.stderr, flush=True)  # fmt: skip
            if a.out:
                a.out.write_text(json.dumps({"llm": a.llm, "pool": len(pool), "report": report,
                                             "seconds": round(time.monotonic() - started, 1)}, indent=2))  # fmt: skip
    finally:
        for s in servers:
            s.stop()
    print("| scenario | rounds | published | rate [Wilson 95%] | results |\n|---|---|---|---|---|")
    for s in report:
        print(f"| {s['scenario']} | {s['rounds']} | {s['published']} | {s['rate']:.3f} "
              f"[{s['wilson95'][0]:.3f}, {s['wilson95'][1]:.3f}] | {s['results']} |")  # fmt: skip
    noise = [s for s in report if not s["scenario"].startswith("taste:")]
    k, n = sum(s["published"] for s in noise), sum(s["rounds"] for s in noise)
    print(f"noise: published {k} of {n} rounds (alpha {alpha})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
