"""`--pairs FILE`: bootstrap a spec from a file of preference pairs instead of the ledger.

Two formats: CSV with `text_a,text_b,preferred_text` (`text_a`/`text_b`), each text holding
`Instruction: ...` then `Output: ...` (the Inverse Constitutional AI layout); or JSONL with
`prompt`, `chosen`, `rejected` per line.
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import orjson

from .dataset import Dataset, Example, Pair, Split, split_pairs
from .errors import CompilerError

_IO_RE = re.compile(r"^\s*Instruction:\s*(?P<prompt>.*?)\s*\n\s*Output:\s*(?P<output>.*)\s*$", re.S)


class PairsFileError(CompilerError):
    """The pairs file cannot be read as either format."""


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


def read_csv(path: Path) -> list[Pair]:
    pairs = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"text_a", "text_b", "preferred_text"} - set(reader.fieldnames or ())
        if missing:
            raise PairsFileError(f"{path}: CSV lacks columns {sorted(missing)}")
        for n, row in enumerate(reader):
            pref = (row["preferred_text"] or "").strip()
            if pref not in ("text_a", "text_b"):
                raise PairsFileError(f"{path}: row {n + 1}: preferred_text must be text_a or text_b, not {pref!r}")
            other = "text_b" if pref == "text_a" else "text_a"
            prompt, chosen = split_instruction_output(row[pref])
            prompt_r, rejected = split_instruction_output(row[other])
            pairs.append(_pair(n, prompt or prompt_r, chosen, rejected))
    return pairs


def read_jsonl(path: Path) -> list[Pair]:
    pairs = []
    for n, line in enumerate(path.read_text("utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            pairs.append(_pair(n, str(obj.get("prompt", "")), str(obj["chosen"]), str(obj["rejected"])))
        except (orjson.JSONDecodeError, KeyError, AttributeError) as exc:
            raise PairsFileError(f"{path}: line {n + 1}: need JSON with chosen and rejected ({exc})") from exc
    return pairs


def read_pairs(path: Path | str) -> list[Pair]:
    path = Path(path)
    if not path.exists():
        raise PairsFileError(f"pairs file {path} does not exist")
    pairs = read_jsonl(path) if path.suffix.lower() in (".jsonl", ".json", ".ndjson") else read_csv(path)
    pairs = [p for p in pairs if p.chosen.response and p.rejected.response]
    if not pairs:
        raise PairsFileError(f"{path}: no usable pairs")
    return pairs


def dataset_from_pairs(path: Path | str, holdout_fraction: float, seed: int) -> Dataset:
    pairs = read_pairs(path)
    train, held = split_pairs(pairs, holdout_fraction, seed)
    window = {"source": f"file:{Path(path).name}", "events": len(pairs), "since": None, "until": None}
    return Dataset(Split(pairs=train), Split(pairs=held), window)
