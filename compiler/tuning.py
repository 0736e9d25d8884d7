"""The compiler's measured constants: the method's sizes, thresholds and its own prompts' token
caps, each with its reason. Where the reason is a choice rather than a measurement, it says so.

They were `SPECLEARN_COMPILER_*` settings once. Nothing in the environment sets them now:
`CompilerSettings(...)` takes another value (tests, benchmarks: bench.quality's overrides), the
`compile` and `compiler` commands take a few as options (`--passes`, `--top-k`, `--format`,
`--interval`, ...), and a process a test starts reads the config file's `[compiler.tuning]`
table (proxy/config.py). Each name below is the field of `CompilerTuning` in capitals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

SpecFormat = Literal["sections", "persona", "rules"]  # rules: the former name of sections
Label = Literal["candidate", "production"]

# -- the compiler's LLM client (compiler/llm.py) -------------------------------------------------
SEED = 0  # every sampled call is seeded: a round on the same feedback and cache repeats itself
TEMPERATURE = 0.0  # judging and writing are greedy; only proposing samples
PROPOSE_TEMPERATURE = 0.7  # diversity across the proposal passes (chosen; seeded, so reproducible)
TIMEOUT = 120.0  # seconds per call, with RETRIES after it (chosen)
# Concurrent calls: the embedded model serves 4 slots (proxy/tuning.py LOCAL_MODEL_PARALLEL); a
# hosted API's 429s are retried with backoff (chosen).
CONCURRENCY = 4
RETRIES = 3  # 5xx, 429 and transport errors, retried after 0.5 s, 1 s, 2 s
# A calibrated judge needs a graded vote: where the endpoint returns no logprobs, each question is
# asked for this many sampled answers (`n`, temperature 1) and the share of each option counts
# (chosen: 5 gives the grades 0, .2, ... 1 for the cost of one call).
JUDGE_SAMPLES = 5

# -- a round's budget (compiler/pipeline.py projects it before the first call) --------------------
# The tokens of one round; the calls are the setting SPECLEARN_COMPILER_MAX_LLM_CALLS. Rounds of
# bench.quality spent 186-3,678 tokens on the 0.5B model (docs/bench-log.md, Quality benchmark):
# the cap stops a runaway, it never shapes a round.
MAX_TOKENS = 400_000
JUDGE_MAX_TOKENS = 4  # a judge answers "A", "B", "Yes" or "No": its vote is read from logprobs
PROPOSE_MAX_TOKENS = 256  # a proposal pass asks for up to 5 one-line rules (compiler/propose.py)
SYNTH_MAX_TOKENS = 512  # a persona paragraph (sections are listed, no LLM call)
TRANSLATE_MAX_TOKENS = 64  # one rule with its check, for one comment no pattern reads
ANSWER_MAX_TOKENS = 256  # answers regenerated under both specs (GATE_REGENERATE)

# -- the method's sizes (compiler/pipeline.py Plan, shrunk to fit the budget) ---------------------
# (chosen with the method; `compile --passes/--validation-pairs/--gate-pairs/--top-k` change them)
PROPOSAL_PASSES = 3
PROPOSAL_SAMPLE = 20  # pairs shown to the proposer over all passes
MAX_CANDIDATES = 12  # principles that reach validation after compression
VALIDATION_PAIRS = 12  # held-out pairs each principle is judged on (x2 orders)
GATE_PAIRS = 16  # held-out pairs the gate judges (x2 orders x2 specs)
TOP_K = 8  # validated rules kept at most, ranked by prevalence x accuracy, one per check family
MIN_ACCURACY = 0.55  # a principle validates when it sides with the preferred answer this often
MIN_PREVALENCE = 0.1  # on at least this share of the pairs (where it takes a side at all)
MIN_HELDOUT_PAIRS = 2  # fewer held-out pairs: "need training pairs", the round is skipped
# Calibration (compiler/calibration.py): 6 menu items from the round's own pairs plus all 24 shipped
# open rules; on 8 open rules the fitted scale was unstable (the 1.5B judge 4/8 in a round, 42/54 in
# bench.judges); the cache makes them free after a judge's first round (docs/benchmarks.md, Judges).
CALIBRATION_PAIRS = 6
CALIBRATION_OPEN = 24
JUDGE_MIN_AGREEMENT = 0.67  # and a Wilson lower bound above 0.5, else the judge is not trusted
# One judge kind: pointwise+calibrated, right on 42/54 non-menu items with the 1.5B model and a
# quarter cheaper than pairwise+calibrated (docs/benchmarks.md, Judges); every kind tried is one
# more chance to trust a judge by luck, and one kind bounds calibration at ~60 calls.
JUDGES = ("pointwise+calibrated",)

# -- whose feedback counts (compiler/dataset.py, compiler/voices.py) ------------------------------
# No one user writes the spec: every new principle needs held-out support from 2 distinct voices
# (users; sessions where no user is known; all anonymous feedback is one voice), and a wish learned
# from comments 2 distinct commenters; each voice counts its latest 50 judgments at most.
MIN_USERS = 2
MIN_REQUESTING_USERS = 2
MAX_PER_USER = 50
HOLDOUT_FRACTION = 0.3  # the latest 30% of the window's feedback is held out (split by time)
WINDOW_DAYS = 30.0  # the feedback a round reads (`compile --since` reads another span)

# -- learning from comments (compiler/evidence.py, compiler/wishes.py) ----------------------------
# With no up/down pairs at all, learn from down-vote comments that name a checkable wish, validated
# and gated on single held-out votes: French 0.00 -> 0.83 against an oracle of 0.75, and the gate
# refused an unprovable closing-line spec (commit e9060d9; docs/benchmarks.md, Learning a preference).
UNARY_COMMENTS = True
# Comments no pattern reads ("give me an example") become a rule with a check, one judge-model call
# per distinct comment, the most repeated first (6 a round: chosen): example 0.08 -> 0.58 and reason
# 0.08 -> 0.67 (docs/benchmarks.md, Learning a preference).
WISH_TRANSLATIONS = 6

# -- compress (compiler/compress.py) ---------------------------------------------------------------
SIMILARITY = 0.6  # lexical: token-Jaccard/difflib ratio for near-duplicates
# Embedding cosine (the embedding model's, else the `embed` extra's MiniLM): on
# tests/data/rule_pairs.jsonl precision 0.90 / recall 0.60, where lexical has 0.50 / 0.13 (commit 5494208).
EMBED_SIMILARITY = 0.55
EMBEDDINGS = True  # False: lexical similarity only

# -- synthesize (compiler/synthesize.py) -----------------------------------------------------------
# sections: the person's text kept, the learned rules listed after it; persona: a paragraph there
# instead, for a short instruction only (`compile --format`).
SPEC_FORMAT: SpecFormat = "sections"
# Every request carries the spec: a learned section over 600 (estimated) tokens drops its
# lowest-ranked rules until it fits; the person's own text is never cut (commit da09bcd, chosen:
# each rule published in docs/benchmarks.md is one sentence, so 600 tokens hold dozens).
MAX_SPEC_TOKENS = 600

# -- the gate (compiler/gate.py) ---------------------------------------------------------------------
# The gate's error rate: feedback with no taste published 0 or 1 of 600 rounds in each of four runs
# of bench.noise, while the length taste got through in 72% (docs/benchmarks.md, Feedback with no taste).
GATE_ALPHA = 0.05
GATE_MARGIN = 0.0  # the candidate must beat the served spec by this much as well (`compile --gate-margin`)
GATE_REGENERATE = False  # also regenerate held-out answers under both specs (`compile --gate-regenerate`)

# -- live experiments (compiler/promote.py, compiler/guardrails.py) --------------------------------
# bench.experiments (docs/benchmarks.md, Auto-promote): the always-valid test at alpha 0.05, tuned
# to a 5-point lift, after 50 thumbs per arm, decided wrongly in 1.2% of A/A runs and promoted a
# +5-point lift in 67.5% within 2,000 thumbs; an MDE of 0.03 or 0.10 changed that by 3-6 points.
PROMOTE_ALPHA = 0.05
PROMOTE_MDE = 0.05
PROMOTE_MIN_FEEDBACK = 50
# A live test still undecided after this many thumbs on each arm ends: production stays, the
# candidate is rolled back and the next round may try another (one live test runs at a time). By
# then the test above finds a lift of the MDE in 67.5% of runs and one of 8 points in 99.5%
# (simulated at a 0.6 base rate, a look every 10 thumbs): what is still undecided is too small to wait for.
PROMOTE_MAX_FEEDBACK = 2000
# Guardrails on the canary's inference rows: an error rate 1 point above production's, if the same
# test finds it significant, rolled back 1.2% of candidates that err as often and 1,999 of 2,000 that
# err twice as often (a bare threshold rolled back 31% at the first look of 100 rows: commit 4736845).
GUARDRAIL_MIN_REQUESTS = 100
GUARDRAIL_MAX_ERROR_INCREASE = 0.01
GUARDRAIL_MAX_LATENCY_RATIO = 1.5  # candidate p95 latency / production's (chosen)
GUARDRAIL_MAX_TOKENS_RATIO = 1.5  # candidate mean tokens per request / production's (chosen)

# -- how a version is released: options of the commands, as a deploy file's `args` (docs/releasing.md)
PUBLISH_LABEL: Label = "candidate"  # a person or the canary promotes it; `--label production` serves it at once
AUTO_PROMOTE = False  # `speclearn compiler --auto-promote`: promote or roll back `candidate` from the canary's thumbs

# -- the sidecar (compiler/sidecar.py; `speclearn compiler --interval/--min-feedback/--metrics-port`)
INTERVAL = 300.0  # seconds between passes over the specs
MIN_FEEDBACK = 20  # new feedback events that make a spec due (chosen; a round learned from 40 in bench.quality)
MAX_BACKOFF = 3600.0  # a failing spec is retried after interval x 2^(failures - 1), at most hourly
METRICS_PORT = 9101  # Prometheus; the deploy files' scrape configs name it (0 = off)
CACHE_DIR: Path | None = None  # the LLM response cache; None: DATA_DIR/compiler/cache


class CompilerTuning(BaseModel):
    """The constants above as fields of `CompilerSettings`: a constructor, a command's option or
    a `[compiler.tuning]` table may change one for a run; the environment cannot."""

    seed: int = SEED
    temperature: float = TEMPERATURE
    propose_temperature: float = PROPOSE_TEMPERATURE
    timeout: float = TIMEOUT
    concurrency: int = CONCURRENCY
    retries: int = RETRIES
    judge_samples: int = Field(JUDGE_SAMPLES, ge=1)
    max_tokens: int = MAX_TOKENS
    judge_max_tokens: int = JUDGE_MAX_TOKENS
    propose_max_tokens: int = PROPOSE_MAX_TOKENS
    synth_max_tokens: int = SYNTH_MAX_TOKENS
    translate_max_tokens: int = TRANSLATE_MAX_TOKENS
    answer_max_tokens: int = ANSWER_MAX_TOKENS
    proposal_passes: int = PROPOSAL_PASSES
    proposal_sample: int = PROPOSAL_SAMPLE
    max_candidates: int = MAX_CANDIDATES
    validation_pairs: int = VALIDATION_PAIRS
    gate_pairs: int = GATE_PAIRS
    top_k: int = TOP_K
    min_accuracy: float = MIN_ACCURACY
    min_prevalence: float = MIN_PREVALENCE
    min_heldout_pairs: int = MIN_HELDOUT_PAIRS
    calibration_pairs: int = CALIBRATION_PAIRS
    calibration_open: int = CALIBRATION_OPEN
    judge_min_agreement: float = JUDGE_MIN_AGREEMENT
    judges: list[str] = Field(default_factory=lambda: list(JUDGES))
    min_users: int = MIN_USERS
    min_requesting_users: int = MIN_REQUESTING_USERS
    max_per_user: int = MAX_PER_USER
    holdout_fraction: float = HOLDOUT_FRACTION
    window_days: float = WINDOW_DAYS
    unary_comments: bool = UNARY_COMMENTS
    wish_translations: int = WISH_TRANSLATIONS
    similarity: float = SIMILARITY
    embed_similarity: float = EMBED_SIMILARITY
    embeddings: bool = EMBEDDINGS
    spec_format: SpecFormat = SPEC_FORMAT
    max_spec_tokens: int = MAX_SPEC_TOKENS
    gate_alpha: float = GATE_ALPHA
    gate_margin: float = GATE_MARGIN
    gate_regenerate: bool = GATE_REGENERATE
    promote_alpha: float = Field(PROMOTE_ALPHA, gt=0, lt=1)
    promote_mde: float = Field(PROMOTE_MDE, gt=0, lt=1)
    promote_min_feedback: int = PROMOTE_MIN_FEEDBACK
    promote_max_feedback: int = PROMOTE_MAX_FEEDBACK
    guardrail_min_requests: int = GUARDRAIL_MIN_REQUESTS
    guardrail_max_error_increase: float = GUARDRAIL_MAX_ERROR_INCREASE
    guardrail_max_latency_ratio: float = GUARDRAIL_MAX_LATENCY_RATIO
    guardrail_max_tokens_ratio: float = GUARDRAIL_MAX_TOKENS_RATIO
    publish_label: Label = PUBLISH_LABEL
    auto_promote: bool = AUTO_PROMOTE
    interval: float = INTERVAL
    min_feedback: int = MIN_FEEDBACK
    max_backoff: float = MAX_BACKOFF
    metrics_port: int = METRICS_PORT
    cache_dir: Path | None = CACHE_DIR
