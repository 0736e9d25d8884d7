"""Auto-promote under continuous monitoring: how often does it decide wrongly, and how fast right?

Simulates canary experiments on thumbs alone (no guardrails): production's thumbs-up rate is
`--base`, the candidate's is base + lift. After every new batch of `--batch` thumbs per version,
up to `--max-thumbs` each, the sidecar looks and may decide; the first promote or rollback ends
the run. Two rules look at the same simulated sample paths:

- `msprt`: what ships, `compiler.promote.decide` itself (the always-valid mSPRT at `--alpha`,
  tuned to `--mde`, after a burn-in of `--min-feedback` thumbs per version);
- `old`:   the rule it replaced (kept below as `old_decide`): promote when the lower end of the
  candidate's Wilson 95% interval beats production's point estimate, roll back when the upper
  end falls short of it, from `--min-feedback` thumbs on.

Reported per rule and true lift: the share of runs promoted, rolled back and undecided at the
horizon, and the median thumbs per version at promotion. Under A/A (lift 0) every decision is
wrong; the sequential test keeps promotions plus rollbacks at or under alpha.

The error-rate guardrail is simulated the same way (`compiler.guardrails.check`, inference rows
instead of thumbs, production erring at `--error-rate`): the share of runs it rolls back when the
candidate errs as often (every rollback wrong) and twice as often.

    python -m bench.learning.experiments                    # 2,000 runs per lift, ~1-2 min of one core
    python -m bench.learning.experiments --runs 50 --max-thumbs 200 --out /tmp/x     # a smoke run

Writes `experiments.json` to `--out` (default bench/results/); its last line reads
`A/A false promotions: P of N runs (alpha A)`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from compiler.guardrails import ArmStats, Limits, check
from compiler.promote import Decision, Rule, decide
from compiler.stats import wilson_lower

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results"


def old_decide(d: Decision, min_feedback: int) -> Decision:
    """compiler/promote.py `decide` before the mSPRT (issue 12), verbatim but for naming."""
    if d.candidate_n < min_feedback or d.production_n < min_feedback:
        d.action = "continue"
        return d
    prod_rate = d.production_ups / d.production_n
    low = wilson_lower(d.candidate_ups, d.candidate_n)
    high = 1.0 - wilson_lower(d.candidate_n - d.candidate_ups, d.candidate_n)
    if low > prod_rate:
        d.action = "promote"
    elif high < prod_rate:
        d.action = "rollback"
    else:
        d.action = "continue"
    return d


def simulate(
    rule: Callable[[Decision], Decision], paths: tuple[list[list[int]], list[list[int]]], batch: int
) -> list[tuple[str, int]]:
    """Per run: (decision, thumbs per version when it was taken; the horizon if undecided)."""
    out = []
    for cand_path, prod_path in zip(*paths, strict=True):
        outcome = ("undecided", len(cand_path) * batch)
        for look, (c, p) in enumerate(zip(cand_path, prod_path, strict=True), start=1):
            n = look * batch
            action = rule(Decision("continue", 2, 1, c, n, p, n)).action
            if action != "continue":
                outcome = (action, n)
                break
        out.append(outcome)
    return out


def summarize(rule: str, lift: float, outcomes: list[tuple[str, int]]) -> dict[str, Any]:
    runs = len(outcomes)
    count = {a: sum(1 for o, _ in outcomes if o == a) for a in ("promote", "rollback", "undecided")}
    promoted_at = [n for o, n in outcomes if o == "promote"]
    return {
        "rule": rule,
        "lift": lift,
        "runs": runs,
        "promoted": count["promote"],
        "rolled_back": count["rollback"],
        "undecided": count["undecided"],
        "promoted_share": count["promote"] / runs,
        "rolled_back_share": count["rollback"] / runs,
        "median_thumbs_to_promote": statistics.median(promoted_at) if promoted_at else None,
    }


def paths_for(rng: np.random.Generator, runs: int, looks: int, batch: int, rates: tuple[float, float]):  # type: ignore[no-untyped-def]
    """Cumulative thumbs-up after each look, per run: (candidate, production) as Python lists."""
    cand = rng.binomial(batch, rates[0], size=(runs, looks)).cumsum(axis=1)
    prod = rng.binomial(batch, rates[1], size=(runs, looks)).cumsum(axis=1)
    return cand.tolist(), prod.tolist()


def guardrail_runs(paths: tuple[list[list[int]], list[list[int]]], batch: int, limits: Limits) -> list[tuple[str, int]]:
    """Per run of cumulative error counts: ("rollback", rows per arm) at the first breach, else undecided."""
    out = []
    for cand_path, prod_path in zip(*paths, strict=True):
        outcome = ("undecided", len(cand_path) * batch)
        for look, (c, p) in enumerate(zip(cand_path, prod_path, strict=True), start=1):
            n = look * batch
            if check(ArmStats(n, c, None, None), ArmStats(n, p, None, None), limits).violations:
                outcome = ("rollback", n)
                break
        out.append(outcome)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.learning.experiments", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=2000, help="simulated experiments per true lift")
    p.add_argument("--max-thumbs", type=int, default=2000, help="horizon: thumbs per version")
    p.add_argument("--batch", type=int, default=10, help="new thumbs per version between two looks")
    p.add_argument("--base", type=float, default=0.5, help="production's thumbs-up rate")
    p.add_argument("--lifts", default="0,0.05,0.10", help="true lifts of the candidate, comma-separated")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--mde", type=float, default=0.05)
    p.add_argument("--min-feedback", type=int, default=50, help="burn-in (thumbs per version), both rules")
    p.add_argument("--error-rate", type=float, default=0.05, help="production's error rate (guardrail runs)")
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| rule | true lift | promoted | rolled back | undecided | median thumbs per version to promote |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        median = r["median_thumbs_to_promote"]
        lines.append(
            f"| {r['rule']} | {r['lift']:+.2f} | {r['promoted_share']:.1%} | {r['rolled_back_share']:.1%} "
            f"| {r['undecided'] / r['runs']:.1%} | {'-' if median is None else f'{median:,.0f}'} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, cpu = time.monotonic(), time.process_time()
    looks = args.max_thumbs // args.batch
    rule = Rule(args.min_feedback, args.alpha, args.mde)
    rules: dict[str, Callable[[Decision], Decision]] = {
        "msprt": lambda d: decide(d, rule),
        "old": lambda d: old_decide(d, args.min_feedback),
    }
    lifts = [float(x) for x in args.lifts.split(",")]
    results = []
    for i, lift in enumerate(lifts):
        rng = np.random.default_rng([args.seed, i])  # both rules see the same sample paths
        paths = paths_for(rng, args.runs, looks, args.batch, (args.base + lift, args.base))
        for name, fn in rules.items():
            results.append(summarize(name, lift, simulate(fn, paths, args.batch)))
    limits = Limits(alpha=args.alpha, tau=args.mde)
    guardrail = []
    for j, factor in enumerate((1.0, 2.0)):
        rng = np.random.default_rng([args.seed, 100 + j])
        paths = paths_for(rng, args.runs, looks, args.batch, (args.error_rate * factor, args.error_rate))
        runs = guardrail_runs(paths, args.batch, limits)
        at = [n for o, n in runs if o == "rollback"]
        guardrail.append({
            "candidate_error_rate": args.error_rate * factor, "production_error_rate": args.error_rate,
            "runs": len(runs), "rolled_back": len(at), "rolled_back_share": len(at) / len(runs),
            "median_rows_to_rollback": statistics.median(at) if at else None,
        })  # fmt: skip
    meta = {
        "runs": args.runs, "max_thumbs": args.max_thumbs, "batch": args.batch, "base": args.base,
        "alpha": args.alpha, "mde": args.mde, "min_feedback": args.min_feedback, "seed": args.seed,
        "seconds": round(time.monotonic() - started, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "experiments.json").write_text(
        json.dumps({"meta": meta, "results": results, "guardrail": guardrail}, indent=2) + "\n"
    )
    print(f"{args.runs} runs per lift, a look every {args.batch} thumbs per version up to {args.max_thumbs}, "
          f"base rate {args.base}, alpha {args.alpha}, MDE {args.mde}, burn-in {args.min_feedback} "
          f"({meta['cpu_seconds']} s CPU)\n")  # fmt: skip
    print("\n".join(table(results)))
    print(f"\nerror-rate guardrail (min {limits.min_requests} rows per arm, margin +{limits.max_error_increase}):")
    for g in guardrail:
        median = g["median_rows_to_rollback"]
        print(f"  candidate {g['candidate_error_rate']:.0%} vs production {g['production_error_rate']:.0%}: "
              f"rolled back in {g['rolled_back']} of {g['runs']} runs"
              f"{'' if median is None else f', median {median:,.0f} rows per arm'}")  # fmt: skip
    aa = next((r for r in results if r["rule"] == "msprt" and r["lift"] == 0.0), None)
    if aa is not None:
        print(f"\nA/A false promotions: {aa['promoted']} of {aa['runs']} runs (alpha {args.alpha})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
