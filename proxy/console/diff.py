"""A side-by-side diff of two spec texts, sentence by sentence (a spec is often one paragraph, so
a line diff would show one changed line), with the changed words of a changed sentence marked."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+(?=\S)")
_WORDS = re.compile(r"\s+|[^\s]+")

Span = tuple[str, bool]  # (text, changed)


@dataclass(slots=True)
class Row:
    tag: str  # equal | replace | delete | insert
    left_no: int | None = None
    right_no: int | None = None
    left: list[Span] = field(default_factory=list)
    right: list[Span] = field(default_factory=list)


def segments(text: str) -> list[str]:
    out: list[str] = []
    for line in text.strip("\n").split("\n"):
        out.extend(_SENTENCE_END.split(line.strip()) if line.strip() else [""])
    return out


def _words(a: str, b: str) -> tuple[list[Span], list[Span]]:
    wa, wb = _WORDS.findall(a), _WORDS.findall(b)
    left: list[Span] = []
    right: list[Span] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        if i2 > i1:
            left.append(("".join(wa[i1:i2]), tag != "equal"))
        if j2 > j1:
            right.append(("".join(wb[j1:j2]), tag != "equal"))
    return left, right


def side_by_side(old: str, new: str) -> list[Row]:
    a, b = segments(old), segments(new)
    rows: list[Row] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            same = zip(range(i1, i2), range(j1, j2), strict=True)  # an equal run is as long on both sides
            rows += [Row("equal", i + 1, j + 1, [(a[i], False)], [(b[j], False)]) for i, j in same]
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            i, j = i1 + k, j1 + k
            if i < i2 and j < j2:
                left, right = _words(a[i], b[j])
                rows.append(Row("replace", i + 1, j + 1, left, right))
            elif i < i2:
                rows.append(Row("delete", i + 1, None, [(a[i], True)], []))
            else:
                rows.append(Row("insert", None, j + 1, [], [(b[j], True)]))
    return rows


def changed(rows: list[Row]) -> tuple[int, int]:
    """(segments removed or changed on the left, added or changed on the right)."""
    return sum(r.tag in ("replace", "delete") for r in rows), sum(r.tag in ("replace", "insert") for r in rows)
