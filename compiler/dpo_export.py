"""The compiler's preference pairs in the shape TRL's DPOTrainer reads (`feedback export --format dpo`).

For users who want weights rather than a spec: the same pairs a compile round learns from, built
by the same code (`dataset.build_dataset`: latest vote per inference, each voice's most recent
`max_per_user` judgments, the newest conversations held out whole; then `Split.contrasts()`:
explicit pairs, an up and a down on the same question, and cross pairs of the ups and downs left
over), one JSON object per pair:

    {"prompt":   [{"role": "user", "content": "Why do cats purr?"}],
     "chosen":   [{"role": "assistant", "content": "..."}],
     "rejected": [{"role": "assistant", "content": "..."}],
     "id": "t:…", "split": "train", "source": "thumbs", ...}

That is TRL's *conversational preference* type with an explicit prompt (TRL documentation,
"Dataset formats and types", https://huggingface.co/docs/trl/dataset_formats: `prompt` a list of
messages, `chosen` and `rejected` each the assistant's reply as a one-message list); DPOTrainer
applies the model's chat template itself. The other keys are metadata a trainer ignores (drop
them before `Dataset.from_list` if yours does not): `id` (the pair's id in a compile report),
`split` (train | heldout), `source` (explicit | thumbs | cross), `chosen_id` / `rejected_id` (the
inference ids), `voices` (who judged), `same_prompt`.

The prompt is the conversation as the client sent it, its own system messages included, and
*without* the spec: the ledger never stores the injected spec, and weights trained on these pairs
are meant to carry the preference without one. Serve such weights with the same system message
you train with (bench/learning/versus_dpo.py prepends the instruction to both).

A cross pair's two answers replied to different questions; its prompt is the chosen answer's
(the rejected reply stands as a reply this user would not want), marked `same_prompt: false`;
`cross=False` leaves cross pairs out. The file reads back into `speclearn compile --pairs`
(compiler/pairs_file.py honours the `split` column).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from proxy.ledger import FeedbackEvent

from .dataset import Dataset, Pair, build_dataset, request_turns

SplitName = Literal["train", "heldout", "all"]
SPLITS: tuple[str, ...] = ("train", "heldout", "all")
Message = dict[str, str]


def prompt_messages(request: dict[str, Any]) -> list[Message]:
    """The chat messages a logged request sent, text only, empty turns dropped
    (`dataset.request_turns`). A `developer` message becomes `system`, the role chat templates
    know."""
    return [{"role": "system" if role == "developer" else role, "content": text}
            for role, text in request_turns(request)]  # fmt: skip


def _messages_by_inference(events: Iterable[FeedbackEvent]) -> dict[str, list[Message]]:
    out: dict[str, list[Message]] = {}
    for ev in events:
        for inf in (ev.inference, ev.rejected):
            if inf is not None and inf.id not in out:
                out[inf.id] = prompt_messages(inf.request)
    return out


def pair_row(pair: Pair, split: str, prompts: dict[str, list[Message]]) -> dict[str, Any]:
    """One pair as a DPO row; the prompt is the chosen answer's conversation (for a pair from a
    file, which has no logged request, its prompt text as one user message)."""
    prompt = prompts.get(pair.chosen.id) or [{"role": "user", "content": pair.chosen.prompt}]
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": pair.chosen.response}],
        "rejected": [{"role": "assistant", "content": pair.rejected.response}],
        "id": pair.id,
        "split": split,
        "source": pair.source,
        "chosen_id": pair.chosen.id,
        "rejected_id": pair.rejected.id,
        "voices": sorted(pair.voices),
        "same_prompt": pair.chosen.prompt.strip() == pair.rejected.prompt.strip(),
    }


def dataset_rows(
    dataset: Dataset, prompts: dict[str, list[Message]], split: SplitName = "train", *, cross: bool = True
) -> list[dict[str, Any]]:
    """The rows of one side of a built dataset (or both, train first)."""
    sides = [("train", dataset.train), ("heldout", dataset.heldout)]
    rows: list[dict[str, Any]] = []
    for name, side in sides:
        if split not in (name, "all"):
            continue
        pairs: Sequence[Pair] = side.contrasts() if cross else side.pairs
        rows += [pair_row(p, name, prompts) for p in pairs]
    return rows


def dpo_rows(
    events: Sequence[FeedbackEvent],
    split: SplitName = "train",
    *,
    holdout_fraction: float = 0.3,
    max_per_user: int = 50,
    cross: bool = True,
) -> list[dict[str, Any]]:
    """Feedback events (as `Ledger.feedback_events` returns them) -> DPO rows, with the
    compiler's caps and split (pass the `CompilerSettings` values to match a compile round)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    ds = build_dataset(events, holdout_fraction=holdout_fraction, max_per_user=max_per_user)
    return dataset_rows(ds, _messages_by_inference(events), split, cross=cross)
