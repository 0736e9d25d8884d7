"""Items with a known answer, on which a judge must prove itself before it is trusted.

Two sources: the round's own held-out pairs that a candidate's check decides (`menu`: what a
program can see), and a set shipped with the compiler (`data/calibration.jsonl`) of rules no
built-in check expresses ("say when you are unsure", "stay on the question asked"), each with
two answers to one question whose preferred side is known by construction (`open`). About half
of the preferred answers there are the shorter one, so a judge that just likes length fails.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from functools import cache
from importlib import resources

from .dataset import Example, Pair
from .judge import CalibrationItem
from .principle import Rule


@cache
def shipped_items() -> tuple[CalibrationItem, ...]:
    text = resources.files("compiler").joinpath("data/calibration.jsonl").read_text(encoding="utf-8")
    items = []
    for n, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        chosen = Example(f"cal{n}c", row["prompt"], row["chosen"], 1.0)
        rejected = Example(f"cal{n}r", row["prompt"], row["rejected"], -1.0)
        items.append(CalibrationItem(row["rule"], Pair(f"cal{n}", chosen, rejected, "file"), row["kind"], "shipped"))
    return tuple(items)


def round_items(principles: Sequence[Rule], heldout: Sequence[Pair], k: int) -> list[CalibrationItem]:
    """Up to k items from this round's data: a candidate's check passes the preferred answer
    and fails the rejected one. Spread over the checkable rules, round robin."""
    per_rule = [
        [
            CalibrationItem(p.text, pair, "menu", "round")
            for pair in heldout
            if p.check.passes(pair.chosen) and not p.check.passes(pair.rejected)
        ]
        for p in principles
        if p.check is not None
    ]
    items: list[CalibrationItem] = []
    depth = 0
    while len(items) < k and any(depth < len(r) for r in per_rule):
        for r in per_rule:
            if depth < len(r) and len(items) < k:
                items.append(r[depth])
        depth += 1
    return items


def calibration_set(
    principles: Sequence[Rule], heldout: Sequence[Pair], *, menu: int, open_: int, seed: int
) -> list[CalibrationItem]:
    """The round's menu items (shipped ones where the round has too few) and `open_` shipped
    open items, a seeded sample so that rounds do not always ask the same ones."""
    rng = random.Random(seed)
    shipped = list(shipped_items())
    rng.shuffle(shipped)
    mine = round_items(principles, heldout, menu)
    mine += [i for i in shipped if i.kind == "menu"][: max(0, menu - len(mine))]
    return mine + [i for i in shipped if i.kind == "open"][:open_]
