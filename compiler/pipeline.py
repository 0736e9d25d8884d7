"""One compile round: collect -> evidence -> propose -> compress -> validate -> synthesize ->
gate -> publish, within a budget projected (and printed) before the first LLM call.

`Round.prepare()` does everything that costs nothing (dataset checks, evidence, the current
spec's rules, the mode, the plan and its projected cost) and returns it as one frozen
`PreparedRound`, so `--dry-run` stops there; `Round.run(prepared)` spends, each stage reading
that value and handing the next one values of its own (rules, principles, a selection, a text).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from proxy.errors import NotFound
from proxy.registry import Registry, SpecState, SpecVersion
from proxy.registry.sections import LEARNED_HEADING, split_spec
from proxy.registry.specfile import body_sha256

from . import prompts
from .calibration import calibration_set
from .comments import down_comments, flagged_comments
from .compress import compress, shortlist
from .dataset import Dataset, Example, Pair
from .errors import CompilerError, NotEnoughFeedback
from .evidence import find_evidence
from .explore import CANDIDATE, AddedRule, Canary, decide
from .gate import GateResult, Spec, gate_in_mode
from .judge import Calibration, Judge, PairwiseJudge, calibrate, make_judge, trusted
from .llm import LLMClient, estimate_tokens
from .memory import Conclusion, Memory, Recalled, Verdict, rule_key
from .outcomes import Mode, Outcome
from .principle import Principle, Rule, Source
from .proposals import Proposal, find_proposals
from .propose import current_principles, propose_llm, sample_pairs
from .publish import build_meta, diff, publish
from .settings import CompilerSettings
from .synthesize import BUDGET_DROP, Synthesis, sections_text, synthesize
from .validate import Selection, select, validate
from .voices import census, sentence
from .wishes import GROUNDING_CANDIDATES, Wish, new_text_rules, translate_wishes, untranslated_wishes

log = logging.getLogger("speclearn.compiler")
Progress = Callable[[str], None]
SPEC_TOKENS = 450  # a 300-word spec, for projections


@dataclass(frozen=True)
class Plan:
    """How much of the method a round runs; shrunk to fit the budget."""

    passes: int
    sample: int
    max_candidates: int
    validation_pairs: int
    gate_pairs: int

    @classmethod
    def from_settings(cls, s: CompilerSettings) -> Plan:
        return cls(s.proposal_passes, s.proposal_sample, s.max_candidates, s.validation_pairs, s.gate_pairs)


@dataclass(frozen=True)
class Projection:
    calls: int
    tokens: int
    stages: dict[str, tuple[int, int]]

    def describe(self) -> str:
        parts = ", ".join(f"{k} {c} calls/{t} tok" for k, (c, t) in self.stages.items() if c)
        return f"at most {self.calls} LLM calls, ~{self.tokens} tokens ({parts or 'no LLM calls'})"


@dataclass
class RoundResult:
    spec: str
    result: Outcome
    reason: str = ""
    error: BaseException | None = None
    current: SpecVersion | None = None
    version: SpecVersion | None = None
    candidate_text: str | None = None
    candidates: list[Principle] = field(default_factory=list)  # each measured rule and its verdict
    selection: Selection | None = None
    synthesis: Synthesis | None = None
    gate: GateResult | None = None
    calibration: dict[str, Any] | None = None
    diff: str = ""
    voices: str = ""  # who the feedback came from and what more is needed, one sentence
    proposals: list[Proposal] = field(default_factory=list)  # rules that would change the person's text
    held: list[SpecVersion] = field(default_factory=list)  # versions awaiting a person (proposals)
    projection: Projection | None = None
    plan: Plan | None = None
    cost: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, int | str] = field(default_factory=dict)  # counts, and which pairs validated
    evidence: dict[str, Any] = field(default_factory=dict)
    flagged_comments: list[dict[str, Any]] = field(default_factory=list)  # comments that tried to instruct
    window: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    conclusions: list[Conclusion] = field(default_factory=list)  # what the round concluded per rule (memory.py)


def served(state: SpecState | None) -> SpecVersion | None:
    """The version users get now: what the candidate competes with. None when the spec has no
    servable version (none yet, or every one held for approval)."""
    try:
        return state.resolve(None) if state is not None and state.versions else None
    except NotFound:
        return None


def requested_by(kept: Sequence[Principle | Rule]) -> int:
    """How many distinct users asked for every rule a candidate adds: 0 when any added rule is
    one nobody asked for in words, or has no check the held-out votes can test."""
    added = [p for p in kept if p.source != Source.CURRENT]
    if not added or any(p.source != Source.COMMENT or p.check is None for p in added):
        return 0
    return min(int(p.evidence.get("users", 0)) for p in added)


def human_part(current: SpecVersion | None, instruction: str) -> str:
    """The person's text the candidate keeps byte for byte: the served version's part before the
    learned section; the instruction when nothing is served yet, or when the served version is
    compiled text from before learned sections (its person's words were the instruction)."""
    if current is None:
        return instruction
    if current.meta.get("author") == "compiler" and f"\n{LEARNED_HEADING}\n" not in f"\n{current.text}\n":
        return instruction
    return split_spec(current.text)[0]


CONTEXT_CHARS = 2000  # what of the person's text the proposer and translator read: a 3,000-token
# production prompt would crowd out the feedback in the 0.5B model's window; its opening says what it is for


def context_of(human: str) -> str:
    """The person's text as context for the LLM's prompts, cut at a line break when long."""
    if len(human) <= CONTEXT_CHARS:
        return human
    cut = human.rfind("\n", 0, CONTEXT_CHARS)
    return human[: cut if cut > 0 else CONTEXT_CHARS].rstrip() + "\n[...]"


MIN_GATE_ITEMS = 10  # a gate half smaller than this could never reach significance: do not split


def split_heldout(train: list[Pair], held: list[Pair]) -> tuple[list[Pair], list[Pair], str]:
    """Validation and gate pairs, never the same ones: the gate's test is valid only on items
    that did not select the rules. With enough held-out pairs, disjoint halves (the method:
    validate on held-out); with fewer, rules are validated on the training pairs and the gate
    keeps every held-out pair, its whole power for the one test that decides."""
    if len(held) >= 2 * MIN_GATE_ITEMS:
        return held[0::2], held[1::2], "heldout half"
    return train, held, "training pairs"


def stated_rules(version: SpecVersion) -> list[Rule] | None:
    """The learned rules a compiled version's text states, from its front matter: its principles,
    less those it recorded as written elsewhere (a proposal's rule, held in a version of its own;
    a rule dropped to fit the length budget). None for a version with no principles in its front
    matter (hand-written): what it states is read from its words."""
    rules = current_principles(version)
    if not rules or not version.meta.get("principles"):
        return None
    synthesis = (version.meta.get("compiler") or {}).get("synthesis") or {}
    elsewhere = {str(p.get("with")) for p in version.meta.get("proposals") or [] if isinstance(p, dict)}
    elsewhere |= {str(r).removeprefix(BUDGET_DROP) for r in synthesis.get("repairs") or []
                  if str(r).startswith(BUDGET_DROP)}  # fmt: skip
    return [r for r in rules if r.text not in elsewhere]


def current_spec(current: SpecVersion | None, human: str) -> Spec:
    """What the candidate competes with, as the gate scores it: the served version's rules from
    its front matter (its person's text read for the rules it states), a hand-written version's
    from its words, or the person's text alone when nothing is served."""
    if current is None:
        return Spec.read(human)
    rules = stated_rules(current)
    if rules is None:
        return Spec.read(current.text)
    return Spec.of(current.text, split_spec(current.text)[0], rules)


@dataclass(frozen=True)
class PreparedRound:
    """All a round knows before it spends: what the feedback is, what the served spec says, the
    mode the held-out feedback allows (chosen once), and the plan that fits the budget."""

    mode: Mode
    current: SpecVersion | None  # the served version, None when nothing is served
    human: str  # the person's text, kept byte for byte
    instruction: str  # what the LLM's prompts read of it (context_of)
    train: tuple[Pair, ...]
    val_pairs: tuple[Pair, ...]  # validate on these ...
    gate_pairs: tuple[Pair, ...]  # ... and gate on these, never the same (split_heldout)
    singles: tuple[Example, ...]  # the held-out votes one by one (the comment-only path measures on them)
    wishes: tuple[Wish, ...]  # comments no pattern reads: for the LLM to translate
    evidence_principles: tuple[Rule, ...]
    current_principles: tuple[Rule, ...]
    complaints: tuple[str, ...]  # the down votes' readable comments, for the proposer
    min_users: int  # distinct voices a new rule needs on held-out feedback
    min_requesting: int  # distinct users who asked, for a rule that ships on request
    hold_reason: str  # why the result is held for a person ("" to serve it)
    plan: Plan
    projection: Projection
    memory: Memory  # what earlier rounds concluded about each rule
    canary: Canary  # the operator's canary: where an undecided candidate may be explored
    through: float  # the newest feedback in the window: later feedback is new evidence

    @property
    def current_text(self) -> str:
        """What the candidate competes with: the current version, or the person's text alone."""
        return self.current.text if self.current else self.human


class Round:
    def __init__(
        self,
        name: str,
        dataset: Dataset,
        *,
        registry: Registry,
        llm: LLMClient,
        settings: CompilerSettings,
        label: str | None = None,
        instruction: str | None = None,
        force: bool = False,
        progress: Progress | None = None,
        judge_llm: LLMClient | None = None,
        memory: Memory | None = None,
        canary: Canary | None = None,
    ) -> None:
        self.name, self.dataset, self.registry, self.llm, self.s = name, dataset, registry, llm, settings
        self.memory, self.canary = memory or Memory(), canary or Canary(0.0)
        self.label = label or settings.publish_label
        self.instruction_override = instruction
        self.force = force
        self.say: Progress = progress or (lambda msg: log.info("%s: %s", name, msg))
        self.result = RoundResult(name, Outcome.SKIPPED)
        # the judge model when one is configured (the compiler's own model is the weaker one by
        # design, and each judge tried is one more chance to trust a judge by luck), else the
        # compiler's model; the first kind that passes calibration validates and gates this round
        self.judge_llm = judge_llm or llm
        self.default_judge: Judge = PairwiseJudge(llm, settings.judge_max_tokens)
        self._started = time.monotonic()

    # -- free: no LLM calls --------------------------------------------------------------------
    async def prepare(self) -> PreparedRound:
        r, s, ds = self.result, self.s, self.dataset
        await self.registry.refresh()
        state = self.registry.snapshot.specs.get(self.name)
        instruction = (self.instruction_override or (state.instruction if state else None) or "").strip()
        current = served(state)
        # the person's text, kept byte for byte; what the LLM reads of it is `instruction`
        human = instruction if self.instruction_override else human_part(current, instruction)
        r.current, r.window, r.dataset = current, ds.window, {**ds.summary()}
        if ds.window.get("nothing_to_learn"):  # SPECLEARN_LEDGER_CONTENT=none: no text kept
            raise NotEnoughFeedback(ds.window["nothing_to_learn"])
        train = ds.train.contrasts()
        held = ds.heldout.contrasts()
        # a pairs file names no users: whoever passes it vouches for it, so one voice is enough
        from_file = str(ds.window.get("source", "")).startswith("file:")
        min_users = 1 if from_file else s.min_users
        evidence_principles, r.evidence = find_evidence(ds.train, min_users=min_users)
        voices = census(ds.train.examples + ds.heldout.examples)
        r.dataset["voices"] = voices.distinct
        r.voices = sentence(voices, min_users)
        # an app that sends no user ids is one voice however many people commented: what they asked
        # for is compiled all the same, with every other defence, but held for a person instead of
        # served, since the distinct-voice defence cannot hold
        hold_reason = ""
        complaints = tuple(e.comment or "" for e in down_comments(ds.train.examples))
        if voices.distinct < min_users and complaints:
            hold_reason = (f"only {voices.distinct} distinct voice(s) behind this feedback "
                           f"({min_users} publish on their own)")  # fmt: skip
            min_users = 1
        r.flagged_comments = flagged_comments(ds.train.examples + ds.heldout.examples)
        if r.flagged_comments:
            self.say(f"{len(r.flagged_comments)} comment(s) read as instructions to the compiler: set aside")
        singles = ds.heldout.examples
        wishes = untranslated_wishes(ds.train.examples, limit=s.wish_translations)
        mode = Mode.PAIRS
        if not train or len(held) < s.min_heldout_pairs:
            # answers that never satisfy a wish give only down votes: no contrasts, and what the
            # users wrote is the only signal. Checkable wishes they named are still measured, on
            # the held-out votes one by one (does the check explain each up and each down?).
            asked = [p for p in evidence_principles if p.source == Source.COMMENT and p.check is not None]
            # wishes only the LLM can read count once enough users wrote them (checked again,
            # per translated rule, after translation)
            wish_voices = {v for w in wishes for v in w.voices}
            readable = asked or len(wish_voices) >= min_users
            if s.unary_comments and readable and len(singles) >= 2 * s.min_heldout_pairs:
                mode = Mode.COMMENTS
                r.dataset["unary_heldout"] = len(singles)
            elif train and self.canary.share > 0 and self.canary.running is None:
                # no offline test possible, but the canary can decide: validate on the training
                # pairs (explore.py asks them for significance, or users for the rule in words)
                mode = Mode.EXPLORE
            else:
                raise NotEnoughFeedback(
                    f"need training pairs and >= {s.min_heldout_pairs} held-out pairs; "
                    f"have {len(train)} and {len(held)} (ups and downs pair up as contrasts). {r.voices}"
                )
        val_pairs, gate_pairs, r.dataset["validated_on"] = split_heldout(train, held)
        prepared = PreparedRound(
            mode=mode, current=current, human=human, instruction=context_of(human.strip()), train=tuple(train),
            val_pairs=tuple(val_pairs), gate_pairs=tuple(gate_pairs), singles=tuple(singles), wishes=tuple(wishes),
            evidence_principles=tuple(evidence_principles), current_principles=tuple(current_principles(current)),
            complaints=complaints, min_users=min_users, min_requesting=1 if hold_reason else s.min_requesting_users,
            hold_reason=hold_reason, plan=Plan.from_settings(s), projection=Projection(0, 0, {}),
            memory=self.memory, canary=self.canary,
            through=max((e.at for e in ds.train.examples + ds.heldout.examples), default=0.0),
        )  # fmt: skip
        plan = self._fit(prepared, prepared.plan)
        r.plan, r.projection = plan, self.project(prepared, plan)
        return replace(prepared, plan=plan, projection=r.projection)

    def project(self, pr: PreparedRound, plan: Plan) -> Projection:
        """An upper bound of the round's LLM calls and tokens, stage by stage."""
        s = self.s
        stages: dict[str, tuple[int, int]] = {}
        if pr.wishes:
            per_wish = max(estimate_tokens(prompts.translate_wish(pr.instruction, w.comment)[0]["content"])
                           for w in pr.wishes)  # fmt: skip
            # a check that does not fit is grounded: one Yes/No question per shared phrase
            per_phrase = max(estimate_tokens(prompts.phrase_meets_wish(pr.instruction, w.comment, "a b c")[0]["content"])
                             for w in pr.wishes) + s.translate_max_tokens  # fmt: skip
            stages["translate"] = (
                len(pr.wishes) * (1 + GROUNDING_CANDIDATES),
                len(pr.wishes) * (per_wish + s.translate_max_tokens + GROUNDING_CANDIDATES * per_phrase),
            )
        sample = sample_pairs(pr.train, plan.sample, s.seed)
        passes = min(plan.passes, len(sample))
        if passes:
            rules = [p.text for p in pr.current_principles]
            prompt = estimate_tokens(prompts.propose(pr.instruction, rules, sample, pr.complaints[:5], 5)[0]["content"])
            stages["propose"] = (passes, prompt + passes * (200 + s.propose_max_tokens))
            stages["compress"] = (passes * 2, passes * 2 * 120)
        pair = max(
            (estimate_tokens(prompts.judge_rule("", p.chosen, p.rejected)[0]["content"]) for p in pr.val_pairs),
            default=200,
        )
        judge_call = pair + 30 + s.judge_max_tokens
        n_cal = (s.calibration_pairs + s.calibration_open) * len(s.judges)
        stages["calibrate"] = (n_cal * 2, n_cal * 2 * judge_call)
        judged = min(plan.max_candidates, len(pr.current_principles) + 2 + passes * 5)
        n_val = min(plan.validation_pairs, len(pr.val_pairs))
        stages["validate"] = (judged * n_val * 2, judged * n_val * 2 * judge_call)
        if s.spec_format == "persona":
            stages["synthesize"] = (1, 400 + s.synth_max_tokens)
        n_gate = min(plan.gate_pairs, len(pr.gate_pairs))
        stages["gate"] = (n_gate * 4, n_gate * 4 * (judge_call + SPEC_TOKENS))
        if s.gate_regenerate:
            per_pair = 2 * (SPEC_TOKENS + s.answer_max_tokens) + 2 * (pair + 2 * s.answer_max_tokens)
            stages["regenerate"] = (n_gate * 4, n_gate * per_pair)
        return Projection(sum(c for c, _ in stages.values()), sum(t for _, t in stages.values()), stages)

    def _fit(self, pr: PreparedRound, plan: Plan) -> Plan:
        """Shrink validation, then the gate sample, then the candidate count, then the passes
        until the projection fits the budget; the budget still stops the round if it was wrong."""
        b = self.llm.budget
        calls, tokens = b.max_calls - b.calls, b.max_tokens - b.tokens
        for _ in range(200):
            proj = self.project(pr, plan)
            if proj.calls <= calls and proj.tokens <= tokens:
                break
            if plan.validation_pairs > 4:
                plan = replace(plan, validation_pairs=plan.validation_pairs - 1)
            elif plan.gate_pairs > 4:
                plan = replace(plan, gate_pairs=plan.gate_pairs - 1)
            elif plan.max_candidates > 2:
                plan = replace(plan, max_candidates=plan.max_candidates - 1)
            elif plan.passes > 1:
                plan = replace(plan, passes=plan.passes - 1)
            else:
                break
        return plan

    # -- spends the budget, one method per stage of the method ------------------------------------
    async def run(self, pr: PreparedRound, *, publish_result: bool = True) -> RoundResult:
        r = self.result
        self.say(
            f"evidence: {len(pr.evidence_principles)} measured candidate(s) from {r.evidence['contrasts']} contrasts"
        )
        self.say(f"current spec: {len(pr.current_principles)} rule(s)"
                 + (f" from {pr.current.ref}" if pr.current else " (none yet)"))  # fmt: skip
        pool, new_text = await self.propose(pr)
        result = await self._run(pr, pool, publish_result=publish_result)
        if new_text and publish_result:
            await self.hold_new_text(pr, new_text)
        return result

    async def _run(self, pr: PreparedRound, pool: list[Rule], *, publish_result: bool) -> RoundResult:
        r = self.result
        sel, judge = await self.validate(pr, self.recall(pr, await self.compress(pr, pool)))
        r.selection = sel
        if not sel.kept:
            return self._finish(Outcome.SKIPPED, "no principle validated on held-out feedback")
        kept, r.proposals = find_proposals(sel.kept, pr.human)
        if r.proposals:
            await self.propose_edits(pr, kept, r.proposals, publish_result=publish_result)
        if pr.current is not None and not sel.dropped and all(p.source == Source.CURRENT for p in kept):
            why = (
                "nothing new to add beside the person's text"
                if r.proposals
                else "held-out feedback supports the current rules"
            )
            return self._finish(Outcome.SKIPPED, f"{why}; nothing new to publish")
        synth = await self.synthesize(pr, kept)
        if synth.rejected:
            return self._finish(Outcome.SKIPPED, synth.rejected)
        if pr.mode == Mode.EXPLORE:  # no held-out item to test on: only the canary can decide
            return await self.explore(pr, synth, sel, None, publish_result=publish_result)
        verdict = await self.gate(pr, judge, synth, sel)
        # what the gate's verdict makes of the candidate
        if not verdict.passed and not self.force:
            if verdict.not_enough:  # thin evidence is no verdict: live traffic, or the next round, decides
                return await self.explore(pr, synth, sel, verdict, publish_result=publish_result)
            return self._finish(Outcome.GATE_FAILED, verdict.reason)
        if not publish_result:
            return self._finish(Outcome.SKIPPED, "not published (--no-publish)")
        await self.publish(pr, synth.text, sel, verdict)
        if pr.hold_reason:
            return self._finish(Outcome.HELD, f"held for a person: {pr.hold_reason}")
        return self._finish(Outcome.PUBLISHED, "forced past the gate" if not verdict.passed else "")

    async def explore(
        self, pr: PreparedRound, synth: Synthesis, sel: Selection, verdict: GateResult | None, *, publish_result: bool
    ) -> RoundResult:
        """A candidate the held-out slice cannot decide: published as `candidate` for the canary
        share when the offline evidence points its way (explore.py), else left for a later round."""
        added = [AddedRule(p.text, p.measured.support, p.measured.relevant,
                           int(p.evidence.get("users", 0)) if p.source == Source.COMMENT else 0)
                 for p in sel.kept if p.source != Source.CURRENT]  # fmt: skip
        tried = sum(p.source != Source.CURRENT for p in self.result.candidates)
        favours_current = verdict is not None and verdict.candidate_accuracy < verdict.current_accuracy
        found = decide(added, pr.canary, held_for_person=pr.hold_reason, heldout_favours_current=favours_current,
                       min_requesting=pr.min_requesting, alpha=self.s.gate_alpha, tried=tried)  # fmt: skip
        undecided = verdict.reason if verdict is not None else "no held-out item to test on"
        if not found.explore:
            why = f"{undecided}; not explored: {found.reason}" if pr.canary.share > 0 else undecided
            return self._finish(Outcome.SKIPPED, why)
        self.result.evidence["explore"] = found.reason
        if not publish_result:
            return self._finish(Outcome.SKIPPED, f"{undecided}; would be explored (--no-publish): {found.reason}")
        await self.publish(pr, synth.text, sel, verdict, label=CANDIDATE, explore=found.reason)
        return self._finish(Outcome.EXPLORED, f"{undecided}; published as {CANDIDATE} for the canary share "
                                              f"({pr.canary.share:.0%} of users) to decide live: {found.reason}")  # fmt: skip

    def recall(self, pr: PreparedRound, candidates: list[Rule]) -> list[Rule]:
        """The candidates less the rules an earlier round refused on the evidence there still is."""
        if not pr.memory:
            return candidates
        pairs = [*pr.train, *self.dataset.heldout.contrasts()]
        comments = [e for e in self.dataset.train.examples + self.dataset.heldout.examples if e.comment and not e.up]
        kept: list[Rule] = []
        aside: list[Recalled] = []
        for rule in candidates:
            found = None
            if rule.source != Source.CURRENT:
                found = pr.memory.set_aside(rule_key(rule.text, rule.check), rule.text, rule.check, pairs, comments)
            if found is None:
                kept.append(rule)
            else:
                aside.append(found)
                self.say(f"memory: {rule.text[:60]!r} not tried again: {found.conclusion.describe()}, "
                         f"{found.new_items} new item(s) bear on it since")  # fmt: skip
        if aside:
            self.result.evidence["remembered"] = [a.to_meta() for a in aside]
        return kept

    def conclusions(self, pr: PreparedRound, now: float) -> list[Conclusion]:
        """What this round concluded about each rule it measured, for the next rounds (memory.py)."""
        r, sel = self.result, self.result.selection
        if sel is None:
            return []
        version = r.version.version if r.version is not None else None

        def conclude(p: Principle, verdict: Verdict, reason: str, at_version: int | None = None) -> Conclusion:
            m = p.measured
            return Conclusion(self.name, rule_key(p.text, p.check), p.text, verdict, now, pr.through, reason,
                              at_version, {"support": m.support, "relevant": m.relevant, "users": m.users,
                                           "method": str(m.method)})  # fmt: skip

        added = [p for p in sel.kept if p.source != Source.CURRENT]
        out: list[Conclusion] = []
        if r.result in (Outcome.PUBLISHED, Outcome.HELD) and version is not None:
            out += [conclude(p, Verdict.KEPT, f"published in v{version}", version) for p in added]
            out += [conclude(p, Verdict.DROPPED, "held-out feedback contradicts it") for p in sel.dropped]
        elif r.result == Outcome.EXPLORED:
            out += [conclude(p, Verdict.EXPLORING, "on the canary share", version) for p in added]
        elif r.result == Outcome.GATE_FAILED:
            out += [conclude(p, Verdict.REFUSED, f"gate: {r.reason}") for p in added]
        contradicted = [p for p in sel.rejected
                        if p.measured.relevant >= 2 and (p.measured.accuracy or 0.0) < 0.5]  # fmt: skip
        out += [conclude(p, Verdict.REFUSED, "held-out feedback sided against it") for p in contradicted]
        return out

    async def propose(self, pr: PreparedRound) -> tuple[list[Rule], list[Rule]]:
        """The pool of candidate rules (current, measured, translated, proposed), and the wishes
        for words never written (for versions held for a person)."""
        s = self.s
        found = await propose_llm(
            self.llm, pr.instruction, pr.current_principles, pr.train, pr.complaints,
            passes=pr.plan.passes, sample=pr.plan.sample, max_tokens=s.propose_max_tokens,
            temperature=s.propose_temperature, seed=s.seed,
            on_pass=lambda i, n: self.say(f"propose: pass {i}/{n}"),
        )  # fmt: skip
        self.say(f"propose: {len(found)} rule(s) from the LLM")
        translated: list[Rule] = []
        new_text: list[Rule] = []
        if pr.wishes:
            # the judge model is the stronger one: the 0.5B copies the prompt's first example
            translated, self.result.evidence["wishes"] = await translate_wishes(
                self.judge_llm, pr.instruction, pr.wishes, self.dataset.train.examples, min_users=pr.min_users,
                max_tokens=s.translate_max_tokens, seed=s.seed,
            )  # fmt: skip
            self.say(
                f"translate: {len(pr.wishes)} comment(s) no pattern reads -> {len(translated)} rule(s) with a check"
            )
            new_text = new_text_rules(self.result.evidence["wishes"])
        # the same check found by evidence too: the translation keeps it, with the words users
        # meant and the users who asked (what the comment-only gate counts)
        asked = {p.check for p in translated}
        measured = [p for p in pr.evidence_principles if p.check is None or p.check not in asked]
        return [*pr.current_principles, *measured, *translated, *found], new_text

    async def compress(self, pr: PreparedRound, pool: list[Rule]) -> list[Rule]:
        s = self.s
        merged = await compress(pool, threshold=s.similarity, llm=self.llm,
                                embed_threshold=s.embed_similarity if s.embeddings else None)  # fmt: skip
        candidates = shortlist(merged, pr.plan.max_candidates)
        self.result.candidates = [Principle(rule) for rule in candidates]
        self.say(f"compress: {len(pool)} -> {len(merged)} principle(s); validating {len(candidates)}")
        return candidates

    async def validate(self, pr: PreparedRound, candidates: list[Rule]) -> tuple[Selection, Judge | None]:
        """The selection, and the judge that passed calibration (None: none did)."""
        done = 0

        def report(p: Principle) -> None:
            nonlocal done
            done += 1
            m = p.measured
            acc = "n/a" if m.accuracy is None else f"{m.accuracy:.2f}"
            self.say(
                f"validate {done}/{len(candidates)}: {p.text[:60]!r} ({m.method}) acc={acc} prev={m.prevalence:.2f}"
            )

        judge, cal = await self.calibrate(pr, candidates)
        measured = await validate(
            candidates, pr.val_pairs, judge or self.default_judge, max_pairs=pr.plan.validation_pairs,
            judge_ok=judge is not None, judge_name=f"{cal.judge}, calibration {cal.agree}/{cal.n}" if cal else "",
            on_done=report, singles=pr.singles,
        )  # fmt: skip
        s = self.s
        sel = select(measured, top_k=s.top_k, min_accuracy=s.min_accuracy, min_prevalence=s.min_prevalence,
                     min_users=pr.min_users, mode=pr.mode)  # fmt: skip
        self.result.candidates = sel.candidates
        return sel, judge

    async def calibrate(self, pr: PreparedRound, candidates: list[Rule]) -> tuple[Judge | None, Calibration | None]:
        """The first judge kind (in the configured order) that proves itself on items
        with a known answer: this round's checkable pairs and shipped rules no check expresses,
        with its calibration. Calibrated even when every candidate has a check: the gate still
        asks the judge, and an uncalibrated 0.5B judge passes candidates on noise (0.487 vs 0.475
        measured)."""
        s = self.s
        items = calibration_set(candidates, pr.val_pairs, menu=s.calibration_pairs, open_=s.calibration_open,
                                seed=s.seed)  # fmt: skip
        if not items:
            return self.default_judge, None  # calibration switched off: the caller asked to trust it
        tried: list[Calibration] = []
        chosen: tuple[Judge, Calibration] | None = None
        for kind in s.judges:
            judge = make_judge(kind, self.judge_llm, s.judge_max_tokens)
            cal = await calibrate(judge, items, passes=lambda a, n: trusted(a, n, s.judge_min_agreement))
            tried.append(cal)
            self.say(f"judge calibration: {cal.describe()} -> {'trusted' if cal.trusted else 'not trusted'}")
            if cal.trusted:
                chosen = judge, cal
                break
        self.result.calibration = {
            "chosen": tried[-1].to_meta() if chosen is not None else None,
            "tried": [c.to_meta() for c in tried],
            "trusted": chosen is not None,
        }
        if chosen is None:
            self.say("no judge passed calibration: rules without a check stay unvalidated, the gate uses checks")
            return None, None
        return chosen

    async def synthesize(self, pr: PreparedRound, kept: list[Principle]) -> Synthesis:
        r, s = self.result, self.s
        synth = r.synthesis = await synthesize(pr.human, [p.rule for p in kept], self.llm, fmt=s.spec_format,
                                               max_tokens=s.synth_max_tokens, max_spec_tokens=s.max_spec_tokens)  # fmt: skip
        r.candidate_text = synth.text
        base = pr.current.ref if pr.current else "instruction"
        r.diff = diff(pr.current_text, synth.text, base, "candidate")
        repairs = f", {len(synth.repairs)} repair(s)" if synth.repairs else ""
        self.say(f"synthesize: the person's text kept, learned section ~{synth.learned_tokens} tokens "
                 f"(budget {s.max_spec_tokens}), ~{synth.tokens} tokens per request; {synth.method}{repairs}")  # fmt: skip
        return synth

    async def gate(self, pr: PreparedRound, judge: Judge | None, synth: Synthesis, sel: Selection) -> GateResult:
        """The candidate against the served spec, each scored by the rules it holds as data."""
        s = self.s
        pairs = pr.gate_pairs[: pr.plan.gate_pairs]
        self.say(f"gate: {len(pairs)} held-out pair(s), candidate vs {pr.current.ref if pr.current else 'instruction'}")
        # comment rules were validated on the same held-out votes one by one: correct for them
        tried = sum(p.source == Source.COMMENT and p.check is not None for p in self.result.candidates)
        result = self.result.gate = await gate_in_mode(
            pr.mode, judge or self.default_judge, Spec.of(synth.text, pr.human, synth.rules),
            current_spec(pr.current, pr.human), pairs=pairs, singles=pr.singles, use_judge=judge is not None,
            margin=s.gate_margin, alpha=s.gate_alpha, holdout_fraction=s.holdout_fraction,
            regenerate=s.gate_regenerate, answer_max_tokens=s.answer_max_tokens, requested_by=requested_by(sel.kept),
            min_users=pr.min_requesting, rules_tried=tried,
        )  # fmt: skip
        result.judge_calibration = self.result.calibration
        outcome = "pass" if result.passed else "not enough feedback yet" if result.not_enough else "FAIL"
        basis = (result.reason if result.passed and result.reason
                 else f"p = {min(result.p_value, 1.0):.4f} (alpha {result.alpha})")  # fmt: skip
        self.say(f"gate: candidate {result.candidate_accuracy:.3f} vs current {result.current_accuracy:.3f}, "
                 f"{basis} -> {outcome}")  # fmt: skip
        return result

    async def publish(
        self, pr: PreparedRound, text: str, sel: Selection, gate: GateResult | None, *, label: str | None = None,
        explore: str = "",
    ) -> None:  # fmt: skip
        r, s = self.result, self.s
        label = label or self.label
        r.cost = self.cost()
        assert r.synthesis is not None
        meta = build_meta(
            principles=sel.kept, dropped=sel.dropped, window=r.window, dataset=r.dataset,
            gate=gate.to_meta() if gate is not None else {}, cost=r.cost, seed=s.seed, model=self.llm.model,
            synthesis={"method": r.synthesis.method, "format": s.spec_format, "repairs": r.synthesis.repairs},
            evidence={"contrasts": r.evidence.get("contrasts"), "comment_themes": r.evidence.get("comment_themes", {})},
            forced=gate is not None and not gate.passed, flagged_comments=r.flagged_comments, spec_tokens=r.synthesis.tokens,
            human=pr.human, learned_tokens=r.synthesis.learned_tokens,
            proposals=[{**p.to_meta(), "held_as": h.version} for p, h in zip(r.proposals, r.held, strict=False)],
        )  # fmt: skip
        meta["voices"] = r.voices
        if pr.hold_reason:
            meta["held_for"] = pr.hold_reason
        if explore:  # why it is tried on the canary share instead of gated offline
            meta["explore"] = explore
        parent = pr.current.version if pr.current else None
        r.version = await publish(self.registry, self.name, text, meta, parent=parent, label=label)
        held = f", held for a person ({pr.hold_reason})" if pr.hold_reason else ""
        self.say(f"published {r.version.ref} as {label}{held}")

    async def hold_new_text(self, pr: PreparedRound, rules: list[Rule]) -> None:
        """What users asked for in words the served model has never written cannot be measured on
        any answer: each such rule is added to the served spec in a version held for a person."""
        for rule in rules:
            why = f"asks for words the served model has never written: {rule.text}"
            await self.hold(pr, sections_text(pr.human, [*pr.current_principles, rule]),
                            {"held_for": why, "wish": Principle(rule).to_meta()})  # fmt: skip

    async def hold(self, pr: PreparedRound, text: str, meta: dict[str, Any]) -> SpecVersion | None:
        """Publish `text` held for a person (meta `held_for` says why), unless the same text was
        published before (awaiting, approved or rejected: once is enough)."""
        await self.registry.refresh()
        state = self.registry.snapshot.specs.get(self.name)
        body = text if text.endswith("\n") else text + "\n"
        if state is not None and body_sha256(body) in {v.sha256 for v in state.versions.values()}:
            return None
        parent = pr.current.version if pr.current else None
        meta = {**meta, "voices": self.result.voices, "compiler": {"model": self.llm.model}}
        held = await self.registry.publish(self.name, text, meta=meta,
                                           author="compiler", parent=parent, labels=[self.label])  # fmt: skip
        self.result.held.append(held)
        self.say(
            f"held {held.ref} for a person ({meta['held_for']}): `speclearn specs approve {self.name} {held.version}`"
        )
        return held

    async def propose_edits(
        self, pr: PreparedRound, kept: list[Principle], proposals: list[Proposal], *, publish_result: bool
    ) -> None:
        """Each rule that contradicts a sentence of the person's text becomes a version with that
        sentence replaced, held until a person approves it (never served before)."""
        for proposal in proposals:
            self.say(f"proposal (awaits a person): replace {proposal.sentence!r} with {proposal.rule.text!r}")
        if publish_result:
            for proposal in proposals:
                await self.hold(pr, sections_text(proposal.apply(pr.human), [p.rule for p in kept]),
                                {"held_for": "proposal", "proposal": proposal.to_meta()})  # fmt: skip

    # -- outcome ----------------------------------------------------------------------------------
    def cost(self) -> dict[str, Any]:
        return {**self.llm.budget.as_dict(), "seconds": round(time.monotonic() - self._started, 2)}

    def finish_error(self, result: Outcome, exc: BaseException) -> RoundResult:
        self.result.error = exc
        return self._finish(result, str(exc))

    def _finish(self, result: Outcome, reason: str) -> RoundResult:
        if n := len(self.result.proposals):
            reason = f"{reason}; " if reason else ""
            reason += f"{n} proposal(s) to change the person's text await approval"
        self.result.result, self.result.reason = result, reason
        self.result.cost = self.cost()
        self.result.seconds = time.monotonic() - self._started
        return self.result


async def run_round(
    round_: Round,
    *,
    dry_run: bool = False,
    publish_result: bool = True,
    on_prepared: Callable[[RoundResult], None] | None = None,
) -> RoundResult:
    """prepare (+ show the projection) + run, turning the round's expected failures into a
    result instead of a crash: too little feedback -> skipped; budget spent or LLM down -> error
    (nothing published)."""
    try:
        prepared = await round_.prepare()
        if on_prepared is not None:
            on_prepared(round_.result)
        if dry_run:
            return round_._finish(Outcome.SKIPPED, "dry run")
        result = await round_.run(prepared, publish_result=publish_result)
        result.conclusions = round_.conclusions(prepared, time.time())
        return result
    except NotEnoughFeedback as exc:
        return round_.finish_error(Outcome.SKIPPED, exc)
    except CompilerError as exc:
        return round_.finish_error(Outcome.ERROR, exc)
