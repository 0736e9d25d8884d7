"""The human-readable account of a round: what was learned, from what evidence, what the gate
said and how the spec changes."""

from __future__ import annotations

from typing import Any

from .pipeline import Projection, RoundResult
from .principle import Method, Principle, Status


def projection(p: Projection | None, budget_calls: int, budget_tokens: int) -> str:
    if p is None:
        return "projection: unavailable"
    warn = ""
    if p.calls > budget_calls or p.tokens > budget_tokens:
        warn = f"  (exceeds the budget of {budget_calls} calls / {budget_tokens} tokens: the round may stop early)"
    return f"projected cost: {p.describe()}{warn}"


def _numbers(p: Principle) -> str:
    m = p.measured
    acc = "n/a" if m.accuracy is None else f"{m.accuracy:.2f}"
    how = {Method.CHECK: "measured", Method.JUDGE: f"judged by {m.judge}" if m.judge else "judged",
           Method.NONE: "not validated"}.get(m.method, m.method or "-")  # fmt: skip
    return (f"support {m.support}/{m.relevant} of {m.n} held-out from {m.users} user(s), accuracy {acc}, "
            f"prevalence {m.prevalence:.2f}, {how}")  # fmt: skip


def _evidence(p: Principle) -> str:
    ev = p.evidence
    parts = []
    if "train_relevant" in ev:
        parts.append(f"train {ev['train_agree']}/{ev['train_relevant']}")
    if ev.get("proposed", 0) > 1:
        parts.append(f"proposed {ev['proposed']}x")
    if ev.get("comments"):
        parts.append("comments: " + " | ".join(repr(c[:60]) for c in ev["comments"][:2]))
    if p.check:
        parts.append(f"check {p.check}")
    if ev.get("check_error"):
        parts.append(f"attached check refused: {ev['check_error']}")
    if ev.get("too_few_users"):
        parts.append(f"too few users: {ev['too_few_users']}")
    if p.status == Status.UNREQUESTED:
        parts.append("no held-out contrast: only rules users asked for can be learned")
    if p.status == Status.REDUNDANT:
        parts.append("the kept rules already side with the users on its items")
    return "; ".join(parts)


def principles(result: RoundResult) -> str:
    if not result.candidates:
        return ""
    lines = ["principles:"]
    order = {Status.ADDED: 0, Status.KEPT: 1, Status.DROPPED: 2, Status.SUPERSEDED: 3, Status.REDUNDANT: 4,
             Status.UNREQUESTED: 5, Status.REJECTED: 6}  # fmt: skip
    for p in sorted(result.candidates, key=lambda p: (order.get(p.status, 4) if p.status else 4, -p.measured.score)):
        lines.append(f"  [{p.status or '?':10}] {p.text}")
        lines.append(f"             {p.source}; {_numbers(p)}" + (f"; {_evidence(p)}" if _evidence(p) else ""))
    return "\n".join(lines)


def flagged(result: RoundResult) -> str:
    """Comments that read as instructions to the compiler: set aside, shown here for a person."""
    if not result.flagged_comments:
        return ""
    lines = ["flagged comments (read as instructions to the compiler; never shown to its LLM nor learned from):"]
    for c in result.flagged_comments:
        times = f" (x{c['count']})" if c.get("count", 1) > 1 else ""
        lines.append(f"  {c['user']}: {c['text'][:120]!r}{times} - {c['why']}")
    return "\n".join(lines)


def gate(result: RoundResult) -> str:
    g = result.gate
    if g is None:
        return ""
    what = "judge accuracy" if g.metric == "judge" else "accuracy of the specs' checkable rules"
    text = (
        f"gate: {'PASSED' if g.passed else 'FAILED'} - {what} on {g.pairs} held-out pair(s): "
        f"candidate {g.candidate_accuracy:.3f} ({g.candidate_agree} agree) vs current "
        f"{g.current_accuracy:.3f} ({g.current_agree} agree), margin {g.margin}"
    )
    if g.checks is not None and g.metric == "judge":
        text += f"\n      checkable rules: candidate {g.checks['candidate']:.3f} vs current {g.checks['current']:.3f}"
    for t in g.tests:
        text += f"\n      {t.name}: {t.wins} better, {t.losses} worse of {t.items}, p = {t.p_value:.4f}"
    text += f"\n      significance: p = {min(g.p_value, 1.0):.4f} after x{g.correction:g} correction, alpha {g.alpha}"
    if g.reason:
        text += f"\n      {g.reason}"
    if g.judge_calibration:
        for c in g.judge_calibration.get("tried", []):
            verdict = "trusted" if c["trusted"] else "not trusted"
            text += (
                f"\n      judge calibration: {c['judge']} {c['agree']}/{c['items']} known answers right -> {verdict}"
            )
    if g.win_rate is not None:
        text += f"\n      regenerated: won {g.wins}, lost {g.losses}, Wilson 95% lower bound {g.wilson_lower:.3f}"
    return text


def spec_cost(result: RoundResult) -> str:
    """What the candidate costs every request it is injected into."""
    synth = result.synthesis
    if synth is None:
        return ""
    over = [r for r in synth.repairs if "budget" in r]
    text = f"spec cost: ~{synth.tokens} tokens added to every request"
    if synth.rejected:
        text += f" (rejected: {synth.rejected})"
    elif over:
        text += "; " + "; ".join(over)
    return text


def proposals(result: RoundResult) -> str:
    """Rules that would change the person's text: never applied by the round, held for a person."""
    if not result.proposals:
        return ""
    lines = ["proposals (the person's text is never edited by a round; each is a held version a person may approve):"]
    held = {v.meta.get("proposal", {}).get("replaces"): v for v in result.held}
    for p in result.proposals:
        lines.append(f"  replace {p.sentence!r}")
        lines.append(f"     with {p.rule.text!r} ({_numbers(p.rule)})")
        if (v := held.get(p.sentence)) is not None:
            lines.append(f"     held as {v.ref}: speclearn specs approve {v.name} {v.version}")
    return "\n".join(lines)


def remembered(result: RoundResult) -> str:
    """Rules an earlier round or live test refused, set aside until new evidence bears on them."""
    aside = result.evidence.get("remembered") or []
    if not aside:
        return ""
    lines = ["remembered (refused before; tried again once new feedback bears on them):"]
    for r in aside:
        where = f" v{r['version']}" if r.get("version") is not None else ""
        lines.append(f"  {r['text']!r}: {r['verdict']}{where} ({r['reason']}); {r['new_items']} new item(s) since")
    return "\n".join(lines)


def turned(result: RoundResult) -> str:
    """Served rules users turned against since a round last concluded about them (drift.py)."""
    rules = result.window.get("turned") or []
    if not rules:
        return ""
    lines = ["turned (users now side against a served rule: rounds learn from the feedback after the turn):"]
    lines += [f"  {r['text']!r}: {r['support']}/{r['relevant']} contrasts sided with users since, p = {r['p_against']:.4f}"
              for r in rules]  # fmt: skip
    return "\n".join(lines)


def summary(result: RoundResult) -> str:
    # which model and why, and how the endpoints made the round ask (once each)
    notes = "notes:\n" + "\n".join(f"  {n}" for n in result.cost.get("notes") or []) if result.cost.get("notes") else ""
    parts = [notes, result.voices, turned(result), remembered(result), principles(result), proposals(result), flagged(result),
             gate(result)]  # fmt: skip
    if result.diff:
        parts.append("diff:\n" + result.diff.rstrip())
    elif result.candidate_text and result.current is None:
        parts.append("candidate:\n" + result.candidate_text)
    if result.synthesis is not None:
        parts.append(spec_cost(result))
    c = result.cost
    if c:
        parts.append(f"cost: {c.get('llm_calls', 0)} LLM calls, {c.get('tokens', 0)} tokens, "
                     f"{c.get('cached_calls', 0)} cached, {result.seconds:.1f}s")  # fmt: skip
    outcome = f"result: {result.result}"
    if result.version is not None:
        outcome += f" -> {result.version.ref}"
    if result.reason:
        outcome += f" ({result.reason})"
    parts.append(outcome)
    return "\n\n".join(p for p in parts if p)


def record(result: RoundResult) -> dict[str, Any]:
    """The round's decisions as data (candidates, translated wishes, judge calibration, gate),
    so a benchmark can say why a spec was or was not learned without re-running the round."""
    return {
        "candidates": [p.to_meta() for p in result.candidates],
        "wishes": result.evidence.get("wishes", []),
        "calibration": result.calibration,
        "gate": result.gate.to_meta() if result.gate is not None else None,
        "dataset": result.dataset,
        "synthesis": None
        if result.synthesis is None
        else {"method": result.synthesis.method, "repairs": result.synthesis.repairs},
        "proposals": [p.to_meta() for p in result.proposals],
        "held": [v.ref for v in result.held],
        "remembered": result.evidence.get("remembered", []),
        "turned": result.window.get("turned", []),
        "explore": result.evidence.get("explore"),
        "voices": result.voices,
    }
