"""A fake hosted upstream that behaves like OpenAI where the compiler meets it: a real HTTP server
on loopback, for the hosted-compiler tests, `speclearn doctor` and the production guide.

What it answers comes from `FakeLLM` (tests/fake_llm.py: the compiler's tasks, and any other
request as the app's answer); what it refuses is OpenAI's, in OpenAI's error shape:

- a key it does not know: 401 `invalid_api_key` (no key at all: 401, code null);
- a model it does not serve: 404 `model_not_found` (`GET /v1/models` lists those it serves);
- a reasoning model (`reasoning`): 400 `unsupported_parameter` for `max_tokens` and 400
  `unsupported_value` for a temperature other than 1; it spends `thinking` hidden tokens of
  `max_completion_tokens` first and answers "" (finish_reason "length") when they do not fit;
- a model without logprobs (`no_logprobs`): accepts `logprobs` and answers without them;
- `/v1/embeddings` for the embedding models only (a chat model there is a 404, as is an
  embedding model at chat completions); vectors are a bag of hashed words, unit length.
Every request is recorded (path, Authorization, body) so a test can say what was asked of whom.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.fake_llm import FakeLLM, serve_on_loopback

CHAT, REASONING, NO_LOGPROBS, EMBEDDING = "gpt-x", "o-reasoner", "gpt-nolp", "text-embedding-x"
KEY = "sk-team-upstream"


def error(status: int, message: str, code: str | None, param: str | None = None) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def not_found(model: object) -> tuple[int, dict[str, Any]]:
    return error(404, f"The model `{model}` does not exist or you do not have access to it.", "model_not_found")


def bag_of_words(text: str, dims: int = 64) -> list[float]:
    """A deterministic embedding: hashed word counts, unit length (same words, same vector)."""
    v = [0.0] * dims
    for word in text.lower().split():
        v[int(hashlib.sha256(word.strip('.,!?"').encode()).hexdigest(), 16) % dims] += 1.0
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


@dataclass
class Seen:
    path: str
    authorization: str | None
    body: dict[str, Any]
    usage: dict[str, Any] | None = None  # what an answered request was billed


@dataclass
class FakeHosted:
    fake: FakeLLM = field(default_factory=FakeLLM)
    keys: frozenset[str] = frozenset({KEY})
    chat_models: frozenset[str] = frozenset({CHAT, REASONING, NO_LOGPROBS})
    reasoning: frozenset[str] = frozenset({REASONING})
    no_logprobs: frozenset[str] = frozenset({NO_LOGPROBS})
    embedding_models: frozenset[str] = frozenset({EMBEDDING})
    thinking: int = 64  # hidden reasoning tokens a reasoning model spends before answering
    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what it answers ------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, authorization: str | None, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        seen = Seen(path, authorization, body)
        with self._lock:
            self.seen.append(seen)
        status, payload = self._answer(method, path, authorization, body)
        if status == 200:
            seen.usage = payload.get("usage")
        return status, payload

    def _answer(
        self, method: str, path: str, authorization: str | None, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if not authorization:
            return error(401, "You didn't provide an API key. You need to provide your API key in an "
                              "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", None)  # fmt: skip
        key = authorization.removeprefix("Bearer ").strip()
        if key not in self.keys:
            return error(401, f"Incorrect API key provided: {key[:3]}***{key[-4:]}. You can find your API key "
                              "at https://platform.openai.com/account/api-keys.", "invalid_api_key")  # fmt: skip
        if method == "GET" and path == "/v1/models":
            ids = sorted(self.chat_models | self.embedding_models)
            return 200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "fake"} for m in ids]}
        if method == "POST" and path == "/v1/embeddings":
            return self._embeddings(body)
        if method == "POST" and path == "/v1/chat/completions":
            return self._chat(body)
        return error(404, f"Invalid URL ({method} {path})", None)

    def _embeddings(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        model = body.get("model")
        if model not in self.embedding_models:
            return not_found(model)
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        data = [{"object": "embedding", "index": i, "embedding": bag_of_words(t)} for i, t in enumerate(texts)]
        tokens = sum(len(t.split()) for t in texts)
        return 200, {"object": "list", "data": data, "model": model,
                     "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip

    def _chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        model = body.get("model")
        if model not in self.chat_models:
            return not_found(model)
        if model in self.reasoning:
            if "max_tokens" in body:
                return error(400, "Unsupported parameter: 'max_tokens' is not supported with this model. "
                                  "Use 'max_completion_tokens' instead.", "unsupported_parameter", "max_tokens")  # fmt: skip
            if body.get("temperature", 1) != 1:
                return error(400, f"Unsupported value: 'temperature' does not support {body['temperature']} with "
                                  "this model. Only the default (1) value is supported.", "unsupported_value",
                             "temperature")  # fmt: skip
        status, payload = self.fake.respond(body)
        if status != 200:
            return status, payload
        choice = payload["choices"][0]
        if model in self.no_logprobs:
            choice.pop("logprobs", None)
        elif body.get("logprobs") and "logprobs" not in choice:  # OpenAI: asked for, always there
            token = (choice["message"]["content"] or " ").split()[0]
            top = [{"token": token, "logprob": -0.01}]
            choice["logprobs"] = {"content": [{"token": token, "logprob": -0.01, "top_logprobs": top}]}
        if model in self.reasoning:
            allowed = body.get("max_completion_tokens")
            usage = payload["usage"]
            usage["completion_tokens"] += self.thinking
            usage["total_tokens"] += self.thinking
            usage["completion_tokens_details"] = {"reasoning_tokens": self.thinking}
            if isinstance(allowed, int) and allowed < self.thinking + 1:
                choice["message"]["content"], choice["finish_reason"] = "", "length"
                choice.pop("logprobs", None)
        n = body.get("n") or 1
        payload["choices"] = [{**choice, "index": i} for i in range(int(n))]
        payload["model"] = model
        return 200, payload

    # -- who asked for what ----------------------------------------------------------------------
    def chats(self, model: str | None = None) -> list[Seen]:
        """The chat completion requests that reached the server (refused ones too)."""
        return [
            s for s in self.seen if s.path == "/v1/chat/completions" and (model is None or s.body.get("model") == model)
        ]

    # -- transport ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """A real HTTP server on loopback; yields its base URL (…/v1)."""
        hosted = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {}
                status, payload = hosted.handle(method, self.path, self.headers.get("Authorization"), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self._answer("POST")

            def do_GET(self) -> None:
                self._answer("GET")

            def log_message(self, *args: Any) -> None:
                pass

        with serve_on_loopback(Handler) as base_url:
            yield base_url
