"""The live loop's simulated users and the worlds they live in.

Users are sticky ids (`u00`..`u39`: the canary split hashes them, so each keeps its arm while the
labels stay put). Each day every event is one user asking one of the first QUESTIONS of
compiler.simulate.PROMPTS with a sampling seed from SEEDS (so a version has at most 32 answers to
compute; the cache replays the rest); the day's events are drawn from (world, seed, day) alone, so every arm
and every rerun meets the same users and questions. A fixed share of users (COMPLAINERS) writes
the taste's complaint on a down vote; the others only vote.

Worlds:
- one per taste of compiler.simulate.TASTES (bench.quality's seven): the users like what the
  taste's checks pass, all days;
- `aa`: no taste: each user's thumb is a biased coin (bias drawn per user from 0.3..0.8, as
  bench/learning/noise.py's `coin`), whatever the answer, and no one comments. Nothing can be
  learned, so the loop must end with no promotion; every arm is rated by the same coin draw;
- `drift`: `bullets` for the first half of the days, then `prose`. Why that pair: it is a direct
  contradiction in the checks' own terms (`list` against `no_list`: no answer satisfies both), so a
  loop that keeps the first rule after the change is measurably worse than the static prompt, and
  following the users means dropping a rule it published, not adding one beside it; both are
  formatting tastes the compiler's check menu expresses, so neither half needs a judge to be seen.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from compiler.simulate import PROMPTS, SEVEN, TASTES, Taste

USERS = tuple(f"u{i:02d}" for i in range(40))
COMPLAINERS = 0.5  # the share of users who write the taste's complaint on a down vote (every other one)
QUESTIONS = 16
SEEDS = (0, 1)  # sampling seeds: at temperature 0.8, each (spec, question) has at most two answers
TEMPERATURE = 0.8
DRIFT = ("bullets", "prose")
AA = "aa"
WORLDS = (*SEVEN, AA, "drift")


@dataclass(frozen=True)
class Event:
    user: str
    prompt: str
    seed: int
    coin: float  # uniform draw for the `aa` world's thumb


@dataclass(frozen=True)
class World:
    name: str
    days: int
    seed: int = 0
    questions: int = QUESTIONS

    def taste(self, day: int) -> Taste | None:
        """The taste in force on `day` (None: the coin world)."""
        if self.name == AA:
            return None
        if self.name == "drift":
            return TASTES[DRIFT[0] if day < self.days // 2 else DRIFT[1]]
        return TASTES[self.name]

    def events(self, day: int, n: int) -> list[Event]:
        rng = random.Random(f"{self.name}/{self.seed}/{day}")
        return [
            Event(rng.choice(USERS), rng.choice(PROMPTS[: self.questions]), rng.choice(SEEDS), rng.random())
            for _ in range(n)
        ]

    def bias(self, user: str) -> float:
        """The `aa` world's per-user probability of a thumb up."""
        return random.Random(f"{self.name}/{self.seed}/bias/{user}").uniform(0.3, 0.8)

    def rate(self, day: int, event: Event, text: str) -> bool:
        taste = self.taste(day)
        return event.coin < self.bias(event.user) if taste is None else taste.likes(text)

    def complaint(self, day: int, event: Event) -> str | None:
        """What this user writes on a down vote (None: nothing)."""
        taste = self.taste(day)
        if taste is None or USERS.index(event.user) % round(1 / COMPLAINERS) != 0:
            return None
        return taste.complaint

    def max_tokens(self, day: int) -> int:
        taste = self.taste(day)
        return taste.max_tokens if taste is not None else 80


def check_worlds(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in WORLDS]
    if unknown:
        raise SystemExit(f"unknown world {', '.join(unknown)}: choose from {', '.join(WORLDS)}")
    return list(names)
