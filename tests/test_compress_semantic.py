"""Semantic compress: duplicates merged, distinct-but-similar rules kept apart, measured on a
labelled set of rule pairs (tests/data/rule_pairs.jsonl); the endpoint's embeddings first (probed
once per client), the packaged MiniLM next, lexical similarity last."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from compiler import embed
from compiler.compress import compress, semantic_similarity, similar, similarity
from compiler.llm import EmbeddingEndpoint, LLMClient
from compiler.principle import Rule, Source, checkable
from compiler.settings import CompilerSettings

PAIRS = [json.loads(line) for line in (Path(__file__).parent / "data" / "rule_pairs.jsonl").read_text().splitlines()]
needs_model = pytest.mark.skipif(embed.local_model() is None, reason="the embed extra is not installed")


def merges(a: str, b: str, sim: float, threshold: float) -> bool:
    """What compress.cluster decides for two principles: different checks never merge."""
    ca, cb = checkable(a), checkable(b)
    return not (ca and cb and ca != cb) and similar(sim, threshold)


def precision_recall(decisions: list[bool]) -> tuple[float, float]:
    tp = sum(d and p["same"] for d, p in zip(decisions, PAIRS, strict=True))
    fp = sum(d and not p["same"] for d, p in zip(decisions, PAIRS, strict=True))
    fn = sum(not d and p["same"] for d, p in zip(decisions, PAIRS, strict=True))
    return (tp / (tp + fp) if tp + fp else 1.0), tp / (tp + fn)


def test_the_labelled_set_has_both_kinds() -> None:
    assert len(PAIRS) >= 30 and 10 <= sum(p["same"] for p in PAIRS) <= len(PAIRS) - 10


@needs_model
def test_embeddings_merge_at_least_as_well_as_lexical_similarity() -> None:
    s = CompilerSettings()
    model = embed.local_model()
    assert model is not None
    va, vb = model.encode([p["a"] for p in PAIRS]), model.encode([p["b"] for p in PAIRS])
    lexical = [merges(p["a"], p["b"], similarity(p["a"], p["b"]), s.similarity) for p in PAIRS]
    semantic = [merges(p["a"], p["b"], semantic_similarity(p["a"], p["b"], x, y), s.embed_similarity)
                for p, x, y in zip(PAIRS, va, vb, strict=True)]  # fmt: skip
    (lp, lr), (ep, er) = precision_recall(lexical), precision_recall(semantic)
    print(f"lexical at {s.similarity}: precision {lp:.2f} recall {lr:.2f}; "
          f"embedding at {s.embed_similarity}: precision {ep:.2f} recall {er:.2f}")  # fmt: skip
    assert ep >= lp and er >= lr
    assert ep >= 0.8 and er >= 0.5  # measured: 0.90 / 0.60 (lexical 0.50 / 0.13)


@needs_model
def test_the_numpy_forward_pass_matches_sentence_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the model is in site-packages; nothing to fetch
    st = pytest.importorskip("sentence_transformers")
    model = embed.local_model()
    assert model is not None
    texts = ["Keep answers short.", 'Never use the phrase "I guess".']
    ref = st.SentenceTransformer(str(embed.model_dir()), device="cpu").encode(texts, normalize_embeddings=True)
    for mine, theirs in zip(model.encode(texts), ref, strict=True):
        assert max(abs(a - float(b)) for a, b in zip(mine, theirs, strict=True)) < 1e-4


def endpoint(vectors: dict[str, list[float]] | None, hits: list[str]) -> httpx.MockTransport:
    """An endpoint that serves embeddings from `vectors` (None: it serves none, 404)."""

    def handler(request: httpx.Request) -> httpx.Response:
        hits.append(request.url.path)
        if vectors is None or not request.url.path.endswith("/embeddings"):
            return httpx.Response(404, json={"error": {"message": "not found"}})
        texts = json.loads(request.content)["input"]
        return httpx.Response(200, json={"data": [{"index": i, "embedding": vectors[t]} for i, t in enumerate(texts)]})

    return httpx.MockTransport(handler)


EMBEDDER = EmbeddingEndpoint("http://fake/v1", "an-embedding-model")  # never the chat model's name
RULES = [Rule("Keep answers short.", Source.EVIDENCE), Rule("Be friendly.", Source.EVIDENCE),
         Rule("Use a warm tone.", Source.EVIDENCE)]  # fmt: skip


async def test_the_endpoints_embeddings_decide_when_it_serves_them() -> None:
    hits: list[str] = []
    vectors = {"Keep answers short.": [1.0, 0.0], "Be friendly.": [0.0, 1.0], "Use a warm tone.": [0.1, 1.0]}
    async with LLMClient("http://fake/v1", "m", transport=endpoint(vectors, hits), embeddings=EMBEDDER) as llm:
        out = await compress(RULES, threshold=0.6, embed_threshold=0.9)
        assert len(out) == 3  # no client: lexical or the local model, neither merges these
        out = await compress(RULES, threshold=0.6, llm=llm, embed_threshold=0.9)
    assert [p.text for p in out] == ["Keep answers short.", "Be friendly."] and out[1].merged == ("Use a warm tone.",)
    assert hits == ["/v1/embeddings"] and llm.budget.calls == 0  # not charged to the round's budget


async def test_an_endpoint_without_embeddings_is_probed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    hits: list[str] = []
    monkeypatch.setattr(embed, "local_model", lambda: None)
    async with LLMClient("http://fake/v1", "m", transport=endpoint(None, hits), embeddings=EMBEDDER) as llm:
        for _ in range(2):
            out = await compress(RULES, threshold=0.6, llm=llm, embed_threshold=0.1)
            assert len(out) == 3  # lexical: nothing alike
    assert hits == ["/v1/embeddings"]


async def test_a_missing_extra_is_one_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(embed, "_local", None)
    monkeypatch.setattr(embed, "_local_missing", None)
    monkeypatch.setattr(embed.importlib.util, "find_spec", lambda name: None)
    with caplog.at_level(logging.INFO, logger="speclearn.compiler"):
        for _ in range(2):
            assert await embed.embed(["a rule", "another"]) is None
            assert len(await compress(RULES, threshold=0.6, embed_threshold=0.1)) == 3
    said = [r.getMessage() for r in caplog.records if "embedding model" in r.getMessage()]
    assert len(said) == 1 and "pip install 'speclearn[embed]'" in said[0] and "lexical" in said[0]


def test_rules_that_ask_different_things_are_never_alike() -> None:
    v = [1.0, 0.0]
    for a, b in [('Never say "I guess".', 'Never say "to be honest".'), ("Answer in at most 20 words.",
                 "Answer in at most 50 words."), ("Use bullet points.", "Do not use bullet points.")]:  # fmt: skip
        assert similarity(a, b) == 0.0 and semantic_similarity(a, b, v, v) == 0.0
    assert semantic_similarity("Keep answers short.", "Answer in at most 20 words.", v, v) == 1.0
