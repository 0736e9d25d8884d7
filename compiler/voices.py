"""Who the feedback came from, and what more a round needs, in one sentence for a person.

Distinct voices bound what comments can teach (no one user writes the spec), and an app that
sends no user ids is one anonymous voice however many people clicked: the report says so and
how to fix it, instead of a bare "skipped".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .dataset import ANONYMOUS, Example

USER_ID_HOWTO = "send each end user's id (the request body's `user` or `safety_identifier`, or an X-User-Id header)"


@dataclass(frozen=True)
class Voices:
    users: int
    sessions: int
    anonymous_events: int
    events: int

    @property
    def distinct(self) -> int:
        """All anonymous feedback is one voice together."""
        return self.users + self.sessions + (self.anonymous_events > 0)


def census(examples: Iterable[Example]) -> Voices:
    voices = [e.voice for e in examples]
    named = set(voices) - {ANONYMOUS}
    sessions = sum(v.startswith("session:") for v in named)
    return Voices(len(named) - sessions, sessions, voices.count(ANONYMOUS), len(voices))


def sentence(v: Voices, min_users: int) -> str:
    """One sentence: the voices counted, and what more is needed when they are too few."""
    parts = [f"{v.users} user(s)"] + ([f"{v.sessions} session(s)"] if v.sessions else [])
    if v.anonymous_events:
        parts.append(f"{v.anonymous_events} anonymous event(s) counted as one voice")
    said = f"Feedback came from {v.distinct} distinct voice(s) ({', '.join(parts)})"
    if v.distinct >= min_users:
        return said + "."
    return (f"{said}; a rule users ask for only in comments needs {min_users}, "
            f"so {USER_ID_HOWTO}, or approve the held version.")  # fmt: skip
