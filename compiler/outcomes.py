"""The round's vocabulary: the mode it runs in, chosen once from the feedback it has, and the
outcome it ends with. String enums, so the front matter, JSON reports and logs keep the same
words (`Outcome.PUBLISHED == "published"`).
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """What the held-out feedback can test."""

    PAIRS = "pairs"  # contrasts (an up and a down, or a person's pair): rules are validated and gated on them
    # no contrasts, only votes with comments: what users asked for in words is measured on the
    # held-out votes one by one, and only requested rules can be learned
    COMMENTS = "comments"
    # too few held-out items for any test, canaries on: rules are validated on the training pairs
    # and only live traffic can decide (explore.py)
    EXPLORE = "explore"


class Outcome(StrEnum):
    """How a round ended."""

    PUBLISHED = "published"  # a new version serves under the label
    HELD = "held"  # published, held for a person to approve
    EXPLORED = "explored"  # published as `candidate` for the canary share: live traffic decides
    GATE_FAILED = "gate_failed"  # the candidate does not beat the current spec
    SKIPPED = "skipped"  # nothing to do: too little feedback, nothing new, thin evidence, dry run
    ERROR = "error"  # the LLM failed or the budget ran out: nothing published
