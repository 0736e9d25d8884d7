"""`--pairs FILE`: bootstrap a spec from a file of preference pairs instead of the ledger.

CSV (`.csv`), JSONL (`.jsonl`, `.ndjson`) or a JSON array (`.json`), in the shapes preference
data usually comes in:

- `prompt`, `chosen`, `rejected` (prompt optional; `question`/`instruction` also name it);
- `text_a`, `text_b`, `preferred_text` (or `preferred`) = `text_a`/`text_b` (also `a`/`b`), each
  text optionally holding `Instruction: ...` then `Output: ...` (the Inverse Constitutional AI
  layout);
- chat datasets: `chosen` and `rejected` as lists of `{role, content}` messages, the prompt being
  the messages they share (or a `prompt` list); transcripts as strings with a shared
  `Human: ... Assistant:` prefix are split the same way.

A `split` column (`train`, or `heldout`/`test`/`validation`/`eval`/`dev` for held out) is
honoured; rows without one are split at random, seeded (a pairs file carries no time to split
by; compiler.dataset.split_pairs). Ties (`preferred_text` = `tie...`, as ICAI files may hold)
carry no preference and are skipped. Other columns are ignored, and one log line says which.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .dataset import Dataset, Example, Pair, Split, content_text, prompt_text, split_pairs
from .errors import CompilerError

log = logging.getLogger("speclearn.compiler")
_IO_RE = re.compile(r"^\s*Instruction:\s*(?P<prompt>.*?)\s*\n\s*Output:\s*(?P<output>.*)\s*$", re.S)
_ASSISTANT_RE = re.compile(r"\n*\s*Assistant:\s*")
PROMPT_COLUMNS = ("prompt", "question", "instruction")
PREFERRED_COLUMNS = ("preferred_text", "preferred")
TRAIN, HELDOUT = "train", "heldout"
SPLIT_VALUES = {"train": TRAIN, "training": TRAIN, "heldout": HELDOUT, "held_out": HELDOUT, "held-out": HELDOUT,
                "test": HELDOUT, "validation": HELDOUT, "valid": HELDOUT, "val": HELDOUT, "eval": HELDOUT,
                "dev": HELDOUT}  # fmt: skip
EXPECTED = (
    "prompt (optional), chosen, rejected; or text_a, text_b, preferred_text (or preferred); "
    "or chosen and rejected as lists of {role, content} messages; optional split (train/heldout/test)"
)


class PairsFileError(CompilerError):
    """The pairs file cannot be read in any of the shapes it accepts."""


@dataclass(frozen=True)
class FilePair:
    pair: Pair
    split: str | None  # train | heldout | None (the file does not say)


def split_instruction_output(text: str) -> tuple[str, str]:
    """`Instruction: Q\\n\\nOutput: A` -> (Q, A); text without the markers is all output."""
    m = _IO_RE.match(text)
    if not m:
        return "", text.strip()
    return m.group("prompt").strip(), m.group("output").strip()


def _pair(n: int, prompt: str, chosen: str, rejected: str) -> Pair:
    digest = hashlib.sha1(f"{prompt}\0{chosen}\0{rejected}".encode()).hexdigest()[:10]
    group = "p:" + hashlib.sha1(prompt.encode()).hexdigest()[:12]
    c = Example(f"f{n}a-{digest}", prompt, chosen, 1.0, float(n), group=group)
    r = Example(f"f{n}b-{digest}", prompt, rejected, -1.0, float(n), group=group)
    return Pair(f"f{n}-{digest}", c, r, "file")


# -- the shapes ------------------------------------------------------------------------------------
def _messages(value: Any) -> list[dict[str, Any]] | None:
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        return value
    return None


def _answer_text(messages: list[dict[str, Any]]) -> str:
    """What the assistant said after the prompt: its turns' text, joined."""
    said = [content_text(m.get("content")).strip() for m in messages if m.get("role", "assistant") == "assistant"]
    return "\n".join(s for s in said if s) or prompt_text({"messages": messages})


def _from_messages(prompt: Any, chosen: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> tuple[str, str, str]:
    """Chat format: the prompt is the messages both conversations share (or a `prompt` list)."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    given = _messages(prompt)
    head = (
        prompt_text({"messages": given}) if given else str(prompt or "") or prompt_text({"messages": chosen[:shared]})
    )
    return head, _answer_text(chosen[shared:]), _answer_text(rejected[shared:])


def _from_transcripts(chosen: str, rejected: str) -> tuple[str, str, str]:
    """`Human: ... Assistant: ...` transcripts: the prompt is the shared prefix up to the last
    `Assistant:` both share; without one, no prompt."""
    limit = 0
    for m in _ASSISTANT_RE.finditer(chosen):
        if rejected[: m.end()] == chosen[: m.end()]:
            limit = m.end()
    if not limit:
        return "", chosen.strip(), rejected.strip()
    return chosen[:limit].strip(), chosen[limit:].strip(), rejected[limit:].strip()


def _preferred(value: Any, where: str) -> str:
    v = str(value if value is not None else "").strip().lower()
    if v in ("text_a", "a"):
        return "text_a"
    if v in ("text_b", "b"):
        return "text_b"
    raise PairsFileError(f"{where}: preferred_text must be text_a or text_b (or a/b), not {value!r}")


def _split_of(row: dict[str, Any], where: str) -> str | None:
    value = row.get("split")
    if value is None or str(value).strip() == "":
        return None
    v = str(value).strip().lower()
    if v not in SPLIT_VALUES:
        raise PairsFileError(f"{where}: split must be one of {sorted(SPLIT_VALUES)}, not {value!r}")
    return SPLIT_VALUES[v]


def _shape(columns: Iterable[str]) -> tuple[str, set[str]]:
    """Which shape the columns are in, and the columns it reads."""
    cols = set(columns)
    prompt = {c for c in PROMPT_COLUMNS if c in cols}
    split = {"split"} & cols
    if {"chosen", "rejected"} <= cols:
        return "chosen/rejected", {"chosen", "rejected"} | prompt | split
    preferred = [c for c in PREFERRED_COLUMNS if c in cols]
    if {"text_a", "text_b"} <= cols and preferred:
        return "text_a/text_b", {"text_a", "text_b", preferred[0]} | prompt | split
    raise PairsFileError(f"expected columns {EXPECTED}; found {sorted(c for c in cols if c)}")


def _row(shape: str, row: dict[str, Any], where: str) -> tuple[str, str, str] | None:
    """(prompt, chosen, rejected), or None for a tie."""
    prompt = next((row[c] for c in PROMPT_COLUMNS if row.get(c) not in (None, "")), "")
    if shape == "chosen/rejected":
        chosen, rejected = row.get("chosen"), row.get("rejected")
        mc, mr = _messages(chosen), _messages(rejected)
        if mc is not None and mr is not None:
            return _from_messages(prompt, mc, mr)
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            raise PairsFileError(f"{where}: chosen and rejected must both be text or both message lists")
        if prompt:
            given = _messages(prompt)
            return (prompt_text({"messages": given}) if given else str(prompt)), chosen.strip(), rejected.strip()
        return _from_transcripts(chosen, rejected)
    pref = next(row[c] for c in PREFERRED_COLUMNS if c in row)
    if str(pref or "").strip().lower().startswith("tie"):
        return None
    first = _preferred(pref, where)
    other = "text_b" if first == "text_a" else "text_a"
    p1, chosen = split_instruction_output(str(row[first] or ""))
    p2, rejected = split_instruction_output(str(row[other] or ""))
    return str(prompt or p1 or p2), chosen, rejected


# -- the formats -----------------------------------------------------------------------------------
def _csv_rows(path: Path) -> tuple[list[str], Iterator[tuple[str, dict[str, Any]]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        rows = [(f"{path}: row {n + 1}", row) for n, row in enumerate(reader)]
        return list(reader.fieldnames or ()), iter(rows)


def _json_rows(path: Path) -> tuple[list[str], Iterator[tuple[str, dict[str, Any]]]]:
    data = path.read_bytes()
    items: list[tuple[str, Any]]
    if data.lstrip()[:1] == b"[":
        try:
            items = [(f"{path}: item {n + 1}", obj) for n, obj in enumerate(orjson.loads(data))]
        except orjson.JSONDecodeError as exc:
            raise PairsFileError(f"{path}: not a JSON array of objects ({exc})") from exc
    else:
        items = []
        for n, line in enumerate(data.splitlines()):
            if not line.strip():
                continue
            try:
                items.append((f"{path}: line {n + 1}", orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                raise PairsFileError(f"{path}: line {n + 1}: not JSON ({exc}); expected columns {EXPECTED}") from exc
    bad = next((where for where, obj in items if not isinstance(obj, dict)), None)
    if bad is not None:
        raise PairsFileError(f"{bad}: expected a JSON object with columns {EXPECTED}")
    columns: dict[str, None] = {}
    for _, obj in items:
        columns.update(dict.fromkeys(obj))
    return list(columns), iter(items)


def read_file_pairs(path: Path | str) -> list[FilePair]:
    """Every usable pair of the file and the split the file gives it (if any)."""
    path = Path(path)
    if not path.exists():
        raise PairsFileError(f"pairs file {path} does not exist")
    reader = _json_rows if path.suffix.lower() in (".jsonl", ".json", ".ndjson") else _csv_rows
    columns, rows = reader(path)
    try:
        shape, used = _shape(columns)
    except PairsFileError as exc:
        raise PairsFileError(f"{path}: {exc}") from None
    ignored = [c for c in columns if c and c not in used]
    if ignored:
        log.info("pairs file %s (%s): ignoring column(s) %s", path.name, shape, ", ".join(ignored))
    out = []
    for n, (where, row) in enumerate(rows):
        found = _row(shape, row, where)
        if found is None:
            continue
        prompt, chosen, rejected = found
        if chosen and rejected and chosen != rejected:
            out.append(FilePair(_pair(n, prompt, chosen, rejected), _split_of(row, where)))
    if not out:
        raise PairsFileError(f"{path}: no usable pairs (each needs a chosen and a different rejected answer)")
    return out


def read_pairs(path: Path | str) -> list[Pair]:
    return [fp.pair for fp in read_file_pairs(path)]


def dataset_from_pairs(path: Path | str, holdout_fraction: float, seed: int) -> Dataset:
    """Train/held-out as the file's `split` column says; rows it leaves open (all, without the
    column) are split at random, seeded, `holdout_fraction` of the prompts held out."""
    items = read_file_pairs(path)
    train = [fp.pair for fp in items if fp.split == TRAIN]
    held = [fp.pair for fp in items if fp.split == HELDOUT]
    rest = [fp.pair for fp in items if fp.split is None]
    if rest:
        tr, ho = split_pairs(rest, holdout_fraction, seed)
        train, held = train + tr, held + ho
    how = "file column" if not rest else "seeded random" if len(rest) == len(items) else "file column + seeded random"
    # validation and the gate read held-out pairs in order: shuffled, so neither sees only the file's start
    random.Random(seed).shuffle(held)
    window = {"source": f"file:{Path(path).name}", "events": len(items), "split": how, "since": None, "until": None}
    return Dataset(Split(pairs=train), Split(pairs=held), window)
