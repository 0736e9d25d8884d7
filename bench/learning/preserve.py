"""Prompt-preservation benchmark: a compile round on a team's own long prompt keeps every line of it.

A team arrives with a production system prompt (headings, bullet rules, a numbered answer
structure, escalation policies, a JSON contract; 300 to 3,000 tokens), not a one-line instruction.
For each prompt of bench/learning/data/prompts/ (provenance and licences in SOURCES.md) and one hidden taste
of bench.learning.quality's seven, the prompt is published as the spec's version 1 and its instruction, and
the closed loop of compiler/simulate.py runs once: simulated users ask, rate and comment through
the real proxy, one compile round publishes, the proxy serves the result. Reported per pair:

- preservation: the prompt's non-blank lines still served verbatim, over all of them (target 100%),
  and whether the prompt is a byte-exact prefix of the served spec (the control: version 1 itself);
- the taste learned: the held-out thumbs-up rate before / compiled / oracle (the prompt plus the
  taste's oracle sentence), Wilson 95% intervals, compiled/oracle, beside the same taste learned
  from the one-line instruction (read from bench.learning.quality's latest results, not re-run);
- the cost: the compile's LLM calls, tokens and seconds, and the spec tokens the round added.

    python -m bench.learning.preserve --out /tmp/preserve.json --md /tmp/preserve.md   # every prompt, round-robin tastes
    python -m bench.learning.preserve --quick                                          # one prompt, one taste
    python -m bench.learning.preserve --prompt hr_policy --taste short

Why round-robin tastes: each prompt once and every taste at least once keeps the run near two
hours on two cores; `--prompt P --taste T` measures any other pair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.learning.quality import arm, compiler_overrides, eval_extra, fmt_arm, on_served_model
from compiler.llm import estimate_tokens
from compiler.simulate import ASSISTANT, PROMPTS, SEVEN, TASTES, Taste, closed_loop

try:  # the spec's two parts, as the compiler writes them (the lead's module; a stand-in until it lands)
    from compiler.sections import split_spec  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    try:
        from proxy.registry.sections import split_spec  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        LEARNED_HEADING = "## Learned from feedback"

        def split_spec(text: str) -> tuple[str, str]:
            """(human part, learned section): the section starts at the last heading line."""
            padded = "\n" + text + "\n"
            at = padded.rfind("\n" + LEARNED_HEADING + "\n")
            if at < 0:
                return text, ""
            return padded[1:at].rstrip("\n"), padded[at + len(LEARNED_HEADING) + 2 :].strip("\n")


PROMPTS_DIR = Path(__file__).parent / "data" / "prompts"
BASELINE = Path(__file__).resolve().parents[1] / "results" / "quality7d.json"
# the fixed order of the round-robin: prompt i gets SEVEN[i % 7]; chosen so that two prompts meet
# a taste their own text contradicts (rag_perplexica asks for depth, support_newtelco forbids lists)
ORDER = (
    "coding_swebench",  # french
    "rag_perplexica",  # short      (conflict: "comprehensive", "in depth")
    "support_newtelco",  # bullets  (conflict: "never create bulleted lists")
    "helpdesk_it",  # closing
    "store_snowy_peak",  # no_phrase
    "tutor_socratic",  # example
    "triage_json",  # reason
    "health_info",  # french
    "hr_policy",  # short
    "legal_tenancy",  # bullets
)
QUICK = ("helpdesk_it", "short")  # the shortest prompt and a taste the one-line run learns fully


# -- pure parts: what is measured on the texts ---------------------------------------------------
def assign(names: Sequence[str] = ORDER, tastes: Sequence[str] = SEVEN) -> list[tuple[str, str]]:
    """Each prompt with one taste, round-robin in a fixed order, so every taste is used once
    there are at least as many prompts as tastes."""
    return [(n, tastes[i % len(tastes)]) for i, n in enumerate(names)]


def load_prompt(name: str, root: Path = PROMPTS_DIR) -> str:
    """The prompt as the registry stores version 1: the file's text ending in one newline."""
    return (root / f"{name}.md").read_text(encoding="utf-8").rstrip("\n") + "\n"


def approx_tokens(text: str) -> int:
    """~characters / 4, the estimate SOURCES.md lists."""
    return len(text) // 4


def preservation(human: str, served: str) -> dict[str, Any]:
    """How much of the person's text the served spec still carries: each non-blank line of
    `human` counts as kept when a line of `served` is exactly it (each served line is matched at
    most once, so a repeated line must be repeated); `byte_exact_prefix` is the stronger claim
    that the served spec starts with the person's text unchanged."""
    wanted = [ln for ln in human.splitlines() if ln.strip()]
    pool = Counter(served.splitlines())
    missing: list[str] = []
    for ln in wanted:
        if pool[ln] > 0:
            pool[ln] -= 1
        else:
            missing.append(ln)
    kept = len(wanted) - len(missing)
    served_human, learned = split_spec(served)
    return {
        "lines": len(wanted),
        "kept": kept,
        "kept_ratio": round(kept / len(wanted), 4) if wanted else 1.0,
        "byte_exact_prefix": served.startswith(human),
        "human_part_unchanged": served_human.rstrip("\n") == human.rstrip("\n"),
        "missing": missing[:10],
        "learned_section": learned,
        "spec_tokens_added": estimate_tokens(served) - estimate_tokens(human),
    }


def oracle_spec(human: str, taste: Taste) -> str:
    """The prompt plus the taste stated outright (its oracle sentence without the one-line persona)."""
    sentence = taste.oracle.removeprefix(ASSISTANT).strip()
    return human.rstrip("\n") + "\n\n" + sentence


def one_line_baseline(path: Path = BASELINE) -> dict[str, dict[str, Any]]:
    """bench.learning.quality's per-taste figures from the one-line instruction, by taste name."""
    try:
        results = json.loads(path.read_text())["results"]
    except (OSError, ValueError, KeyError):
        return {}
    return {r["taste"]: {"before": r["before"], "compiled": r["compiled"], "oracle": r.get("oracle"),
                         "compiled_over_oracle": r.get("compiled_over_oracle"),
                         "compile_results": r.get("compile_results", [])} for r in results}  # fmt: skip


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def table(results: Sequence[dict[str, Any]]) -> str:
    """One Markdown row per prompt x taste; a pair that failed shows its error."""
    head = ("| prompt | ~tokens | taste | lines kept | byte-exact | before | compiled | oracle | compiled/oracle "
            "| one-line c/o | LLM calls | tokens | compile s | +spec tokens | compile |")  # fmt: skip
    lines = [head, "|" + "---|" * 15]
    for r in results:
        if r.get("error"):
            lines.append(f"| {r['prompt']} | {r.get('prompt_tokens', '-')} | {r['taste']} | error: {r['error'][:80]} |"
                         + " |" * 11)  # fmt: skip
            continue
        p = r["preservation"]
        lines.append(
            f"| {r['prompt']} | {r['prompt_tokens']} | {r['taste']} | {p['kept']}/{p['lines']} ({p['kept_ratio']:.0%}) "
            f"| {'yes' if p['byte_exact_prefix'] else 'NO'} | {fmt_arm(r['before'])} | {fmt_arm(r['compiled'])} "
            f"| {fmt_arm(r['oracle'])} | {_ratio(r['compiled_over_oracle'])} | {_ratio(r['one_line_compiled_over_oracle'])} "
            f"| {r['llm_calls']} | {r['tokens']} | {r['compile_seconds']:.0f} | {p['spec_tokens_added']} "
            f"| {'; '.join(r['compile_results'])[:120]} |"
        )
    return "\n".join(lines)


def summary(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The two claims over all pairs: every line kept, and the taste learned as from one line."""
    ok = [r for r in results if not r.get("error")]
    lines = sum(r["preservation"]["lines"] for r in ok)
    kept = sum(r["preservation"]["kept"] for r in ok)
    paired = [r for r in ok if r["compiled_over_oracle"] is not None and r["one_line_compiled_over_oracle"] is not None]
    return {
        "pairs": len(results), "errors": len(results) - len(ok),
        "lines_kept": f"{kept}/{lines}", "all_lines_kept": kept == lines and bool(ok),
        "byte_exact": sum(r["preservation"]["byte_exact_prefix"] for r in ok),
        "published": sum(r["published"] is not None for r in ok),
        "mean_compiled_over_oracle": round(sum(r["compiled_over_oracle"] for r in paired) / len(paired), 3) if paired else None,
        "mean_one_line_compiled_over_oracle": (
            round(sum(r["one_line_compiled_over_oracle"] for r in paired) / len(paired), 3) if paired else None),
        "at_least_0.9_of_oracle": sum(r["compiled_over_oracle"] >= 0.9 for r in paired),
    }  # fmt: skip


# -- the run -------------------------------------------------------------------------------------
async def run_pair(base_url: str, model: str, name: str, taste_name: str, a: argparse.Namespace,
                   baseline: dict[str, dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """One prompt x taste: the closed loop from the prompt (one compile round), then the oracle arm."""
    taste = TASTES[taste_name]
    human = load_prompt(name)
    instruction = human.rstrip("\n")  # closed_loop publishes it and adds the newline back

    def say(m: str) -> None:
        print(f"[{name}/{taste_name}] {m}", file=sys.stderr, flush=True)

    held = PROMPTS[a.train : a.train + a.eval]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"speclearn-preserve-{name}-") as tmp:
        rows = await closed_loop(
            base_url, Path(tmp), taste, rounds=1, train_prompts=PROMPTS[: a.train], eval_prompts=held,
            samples=a.samples, max_tokens=a.max_tokens, compiler_overrides=compiler_overrides(model, a),
            instruction=instruction, say=say, complain_every=a.complain_every, concurrency=a.concurrency,
            eval_extra=eval_extra(a),
        )  # fmt: skip
    oracle: dict[str, Any] | None = None
    if not a.no_oracle:
        with tempfile.TemporaryDirectory(prefix=f"speclearn-preserve-{name}-oracle-") as tmp:
            (o,) = await closed_loop(
                base_url, Path(tmp), taste, rounds=0, eval_prompts=held, max_tokens=a.max_tokens,
                instruction=oracle_spec(human, taste), say=lambda m: say(f"oracle: {m}"), eval_extra=eval_extra(a),
            )  # fmt: skip
        oracle = arm(o.eval_ups, o.eval_n)
    before, after = rows[0], rows[-1]
    compiled = arm(after.eval_ups, after.eval_n)
    ratio = round(compiled["rate"] / oracle["rate"], 3) if oracle and oracle["rate"] > 0 else None
    one_line = baseline.get(taste_name, {})
    return {
        "prompt": name, "taste": taste_name, "prompt_tokens": approx_tokens(human),
        "preservation": preservation(human, after.spec_text),
        "control_version_1": {k: v for k, v in preservation(human, before.spec_text).items() if k != "learned_section"},
        "before": arm(before.eval_ups, before.eval_n), "compiled": compiled, "oracle": oracle,
        "compiled_over_oracle": ratio,
        "one_line": one_line or None,
        "one_line_compiled_over_oracle": one_line.get("compiled_over_oracle"),
        "feedback_events": before.feedback_events, "comments": before.comments,
        "llm_calls": before.llm_calls, "tokens": before.tokens, "compile_seconds": round(before.compile_seconds, 1),
        "compile_results": [f"{before.compile_result}" + (f" ({before.compile_reason})" if before.compile_reason else "")],
        "published": before.published, "served_after": after.version,
        "max_tokens": a.max_tokens or taste.max_tokens,
        "seconds": round(time.monotonic() - started, 1),
        "compiled_spec": after.spec_text, "diff": before.diff, "report": before.report,
        "answers": {"before": before.eval_answers, "compiled": after.eval_answers},
    }  # fmt: skip


def pairs_for(a: argparse.Namespace) -> list[tuple[str, str]]:
    """`--quick`: one pair; `--prompt`: those prompts; `--taste`: that taste in place of the assigned one."""
    pairs = assign()
    if a.prompt:
        pairs = [(n, t) for n, t in pairs if n in a.prompt] + [(n, SEVEN[0]) for n in a.prompt if n not in ORDER]
    if a.taste:
        pairs = [(n, a.taste) for n, _ in pairs]
    if a.quick:
        pairs = pairs[:1] if (a.prompt or a.taste) else [QUICK]
    return pairs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.learning.preserve", description=(__doc__ or "").split("\n")[0])
    names = sorted(f.stem for f in PROMPTS_DIR.glob("*.md") if f.stem != "SOURCES")
    p.add_argument("--prompt", action="append", choices=names, help="repeatable; default: every prompt")
    p.add_argument("--taste", choices=sorted(TASTES), help="this taste instead of each prompt's assigned one")
    p.add_argument("--quick", action="store_true", help=f"one pair (default {QUICK[0]} x {QUICK[1]})")
    p.add_argument("--train", type=int, default=20, help="training questions (x --samples answers each)")
    p.add_argument("--eval", type=int, default=12, help="held-out questions per arm")
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--max-tokens", type=int, help="answer cap of the served model; default: the taste's")
    p.add_argument("--complain-every", type=int, default=2, help="every N-th user comments on a down vote (0: none)")
    p.add_argument("--concurrency", type=int, default=4, help="simulated users asking training questions at once")
    p.add_argument("--no-oracle", action="store_true", help="skip the oracle arm")
    p.add_argument("--base-url", help="OpenAI-compatible upstream; default: the embedded local model")
    p.add_argument("--max-calls", type=int, default=160, help="LLM call budget per compile round")
    p.add_argument(
        "--judge-model", default="qwen2.5-coder-1.5b", help="embedded judge model ('none': the compiler's own)"
    )
    p.add_argument("--judge-base-url", help="the judge's endpoint instead of an embedded model")
    p.add_argument(
        "--baseline", type=Path, default=BASELINE, help="bench.learning.quality results of the one-line instruction"
    )
    p.add_argument("--out", type=Path, help="write the JSON report here")
    p.add_argument("--md", type=Path, help="write the Markdown table here")
    a = p.parse_args(argv)
    if a.train + a.eval > len(PROMPTS):
        p.error(f"--train + --eval must be at most {len(PROMPTS)}")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    pairs = pairs_for(a)
    baseline = one_line_baseline(a.baseline)
    results: list[dict[str, Any]] = []

    def write() -> None:
        report = {"summary": summary(results), "results": results, "table": table(results),
                  "baseline": str(a.baseline),
                  "settings": {k: v for k, v in vars(a).items() if k not in ("out", "md")}}  # fmt: skip
        if a.out:
            a.out.write_text(json.dumps(report, indent=2, default=str))
        if a.md:
            a.md.write_text(table(results) + "\n")

    def run_all(base_url: str, model: str) -> None:
        for name, taste in pairs:
            try:
                results.append(asyncio.run(run_pair(base_url, model, name, taste, a, baseline)))
            except Exception as exc:  # noqa: BLE001 - one failed pair must not lose the others' hours
                results.append({"prompt": name, "taste": taste, "prompt_tokens": approx_tokens(load_prompt(name)),
                                "error": f"{type(exc).__name__}: {exc}"})  # fmt: skip
            write()  # a partial report survives an interrupted run

    on_served_model(a, run_all)
    write()
    print(table(results))
    print(json.dumps(summary(results), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
