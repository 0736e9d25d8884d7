"""A scripted OpenAI-compatible LLM for the compiler's tests, and the feedback fixtures it meets.

It answers by task (the compiler's prompts start with `TASK: ...`) with behaviour simple enough
to reason about: the judge follows rules and guidelines it can check (quoted forbidden phrases,
"short"/"at most N words", "question") and otherwise shows a position bias ("A"), like small
models do. Use it in-process (`transport`, an httpx.MockTransport) or as a real HTTP server
(`serve()`), e.g. for the CLI.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from compiler.calibration import shipped_items
from compiler.simulate import TASTES, LoopRound, closed_loop
from proxy.ledger import FeedbackRecord, InferenceRecord
from proxy.ledger.sqlite import SqliteLedger

Judge = Callable[[str, str, str], str | None]  # (criteria, answer A, answer B) -> "A" | "B" | None

DEFAULT_RULES = [
    'Never use the phrase "I guess".',
    "Keep answers short and to the point.",
    "Be friendly and enthusiastic.",
]


def violations(criteria: str, text: str) -> int:
    """How many checkable rules stated in `criteria` the text breaks, read sentence by sentence:
    never/avoid "X", begin with "X", at most N words, short, a question."""
    t = text.lower()
    n = 0
    lines = (re.sub(r"^\s*(?:[-*+]|\d+[.)]|#+)\s+", "", ln) for ln in criteria.splitlines())  # a list item is a rule
    for sentence in (s for ln in lines for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", ln)):
        low = sentence.lower()
        quoted = [q.lower() for q in re.findall(r'"([^"]+)"', sentence)]
        if any(w in low for w in ("never", "avoid", "do not", "don't")):
            n += sum(q in t for q in quoted)
        elif "include" in low or "mention" in low:
            n += sum(q not in t for q in quoted)
        if "begin" in low or "start" in low:
            n += sum(not t.lstrip().startswith(q) for q in quoted)
        if m := re.search(r"at most (\d+) words", low):
            n += len(text.split()) > int(m.group(1))
        elif "short" in low or "concise" in low or "brief" in low:
            n += len(text.split()) > 25
        elif "thorough" in low or "detail" in low:
            n += len(text.split()) < 25
        if "with a question" in low:
            n += not text.rstrip().endswith("?")
    return n


def rule_judge(criteria: str, a: str, b: str) -> str | None:
    """Prefer the answer that breaks fewer of the checkable rules stated in `criteria`."""
    va, vb = violations(criteria, a), violations(criteria, b)
    if va == vb:
        return None
    return "A" if va < vb else "B"


def rule_follows(criteria: str, answer: str) -> bool | None:
    """The pointwise view of the same judge: an answer follows the criteria when it breaks none
    of their checkable rules (None, no opinion, when they state none it could check)."""
    probes = ("", "x " * 200, "?", *re.findall(r'"([^"]+)"', criteria))
    if len({violations(criteria, probe) for probe in probes}) == 1:
        return None  # nothing checkable in the criteria: every text scores the same
    return violations(criteria, answer) == 0


def _flat(text: str) -> str:
    return " ".join(text.split())


# the shipped calibration items: a judge that "knows" them answers them right (a competent judge)
CALIBRATION = {(_flat(i.pair.chosen.response), _flat(i.pair.rejected.response)) for i in shipped_items()}
CALIBRATION_CHOSEN, CALIBRATION_REJECTED = {c for c, _ in CALIBRATION}, {r for _, r in CALIBRATION}


@contextlib.contextmanager
def serve_on_loopback(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded HTTP server on a free loopback port for the duration; yields its `/v1` base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class FakeLLM:
    rules: list[str] = field(default_factory=lambda: list(DEFAULT_RULES))
    judge: Judge = rule_judge
    bias: str = "A"  # the judge's answer when its criteria say nothing
    # the pointwise judge: does this answer follow the criteria? (None: no opinion -> "Yes")
    point_judge: Callable[[str, str], bool | None] | None = rule_follows
    knows_calibration: bool = True  # answers the shipped calibration items right
    persona: Callable[[list[str]], str] | None = None
    # a gullible proposer: also turns every user comment quoted in its prompt into a rule, as a
    # small model may do with text it should only analyse
    echo_comments: bool = False
    # "TASK: turn a complaint into a rule": the complaint -> the reply (None: no rule)
    translate: Callable[[str], str] | None = None
    # "TASK: does a phrase meet a wish": (complaint, phrase) -> yes? (None: never answers Yes or No)
    grounds: Callable[[str, str], bool] | None = None
    answer: Callable[[dict[str, Any]], str] | None = None  # any other request (a served answer)
    logprobs: bool = True
    fail_first: int = 0  # answer the first N requests with HTTP 500
    status: int | None = None  # answer every request with this status
    calls: list[dict[str, Any]] = field(default_factory=list)
    # as a real server (serve()): what GET /health answers and /v1/models lists, so a test can
    # announce it as an embedded model server (proxy.local_model.discovery)
    health: int = 200
    model_ids: tuple[str, ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- dispatch ---------------------------------------------------------------------------
    def respond(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "messages" not in body:  # not a chat completion (say /v1/embeddings): not served, not counted
            return 404, {"error": {"message": "not found", "type": "not_found"}}
        with self._lock:
            self.calls.append(body)
            n = len(self.calls)
        if self.status is not None:
            return self.status, {"error": {"message": "scripted failure", "type": "server_error"}}
        if n <= self.fail_first:
            return 500, {"error": {"message": "scripted failure", "type": "server_error"}}
        prompt = body["messages"][-1]["content"]
        task = prompt.split("\n", 1)[0]
        sure = 0.9  # the probability the judge gives its answer (the logprobs it returns)
        if task.startswith("TASK: propose rules"):
            echoed = re.findall(r"<comment>(.*?)</comment>", prompt) if self.echo_comments else []
            text = "Here are the rules:\n" + "\n".join(f"- {r}" for r in [*self.rules, *echoed])
        elif task.startswith("TASK: merge rules"):
            text = re.findall(r"^- (.*)$", prompt, re.M)[0]
        elif task.startswith("TASK: judge by a rule"):
            text = self._judge(prompt.split("Rule: ", 1)[1].split("\n", 1)[0], prompt)
        elif task.startswith("TASK: check an answer against a rule"):
            text = self._point(prompt.split("Rule: ", 1)[1].split("\n", 1)[0], prompt)
        elif task.startswith("TASK: check an answer against guidelines"):
            guidelines = prompt.split("Guidelines for the assistant:\n", 1)[1].split("\n\nQuestion", 1)[0]
            text = self._point(guidelines, prompt)
            # graded as a real judge's P(Yes) is: an answer that breaks more of the guidelines is surer a No
            m = re.search(r"^Answer: (.*)$", prompt, re.M)
            sure = 1 - 0.1 / (1 + violations(guidelines, m.group(1) if m else "")) if text == "No" else sure
        elif task.startswith("TASK: judge by guidelines"):
            guidelines = prompt.split("Guidelines for the assistant:\n", 1)[1].split("\n\nQuestion", 1)[0]
            text = self._judge(guidelines, prompt)
        elif task.startswith("TASK: predict the user's preference"):
            text = self._judge(prompt, prompt)
        elif task.startswith("TASK: turn a complaint into a rule"):
            complaint = re.findall(r"<comment>(.*?)</comment>", prompt)[-1]
            text = self.translate(complaint) if self.translate else "I cannot tell."
        elif task.startswith("TASK: does a phrase meet a wish"):
            complaint = re.findall(r"<comment>(.*?)</comment>", prompt)[-1]
            phrase = re.findall(r'Is using the phrase "(.*?)"', prompt)[-1]
            text = ("Yes" if self.grounds(complaint, phrase) else "No") if self.grounds else "I cannot tell."
        elif task.startswith("TASK: write a persona"):
            listed = re.findall(r"^\d+\. (.*)$", prompt, re.M)
            text = self.persona(listed) if self.persona else default_persona(listed)
        else:
            text = self.answer(body) if self.answer else "A short answer."
        return 200, self._completion(body, text, sure)

    def _judge(self, criteria: str, prompt: str) -> str:
        a = re.search(r"^Answer A: (.*)$", prompt, re.M)
        b = re.search(r"^Answer B: (.*)$", prompt, re.M)
        if a and b and self.knows_calibration:
            if (a.group(1), b.group(1)) in CALIBRATION:
                return "A"
            if (b.group(1), a.group(1)) in CALIBRATION:
                return "B"
        choice = self.judge(criteria, a.group(1) if a else "", b.group(1) if b else "") if a and b else None
        return choice or self.bias

    def _point(self, criteria: str, prompt: str) -> str:
        m = re.search(r"^Answer: (.*)$", prompt, re.M)
        answer = m.group(1) if m else ""
        if self.knows_calibration and answer in CALIBRATION_CHOSEN | CALIBRATION_REJECTED:
            return "Yes" if answer in CALIBRATION_CHOSEN else "No"
        follows = self.point_judge(criteria, answer) if self.point_judge else None
        return "Yes" if follows is None or follows else "No"

    def _completion(self, body: dict[str, Any], text: str, sure: float = 0.9) -> dict[str, Any]:
        prompt_tokens = sum(len(m["content"]) for m in body["messages"]) // 4 + 1
        completion_tokens = len(text) // 4 + 1
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
        if body.get("logprobs") and self.logprobs and text in ("A", "B", "Yes", "No"):
            other = {"A": "B", "B": "A", "Yes": "No", "No": "Yes"}[text]
            choice["logprobs"] = {"content": [{
                "token": text, "logprob": math.log(sure),
                "top_logprobs": [{"token": text, "logprob": math.log(sure)}, {"token": other, "logprob": math.log(1 - sure)}],
            }]}  # fmt: skip
        return {
            "id": f"chatcmpl-{len(self.calls)}",
            "object": "chat.completion",
            "model": body.get("model", "fake"),
            "choices": [choice],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }  # fmt: skip

    def count(self, task: str) -> int:
        return sum(c["messages"][-1]["content"].startswith(f"TASK: {task}") for c in self.calls)

    # -- transports -------------------------------------------------------------------------
    @property
    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            if not request.url.path.endswith("/chat/completions"):
                return httpx.Response(404, json={"error": {"message": "not found"}})
            status, payload = self.respond(json.loads(request.content))
            return httpx.Response(status, json=payload)

        return httpx.MockTransport(handler)

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """A real HTTP server on loopback; yields its base URL (…/v1)."""
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self._send(*fake.respond(body))

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._send(fake.health, {"status": "ok" if fake.health == 200 else "loading"})
                elif self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in fake.model_ids]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def log_message(self, *args: Any) -> None:
                pass

        with serve_on_loopback(Handler) as base_url:
            yield base_url


def default_persona(rules: list[str]) -> str:
    """A paragraph of about 160 words that states every rule."""
    opening = "You are a capable, warm assistant who cares about the person you are helping."
    filler = (
        "You read each question carefully, you answer what was asked, and you keep the conversation "
        "pleasant and useful. You respect the person's time and you never pad an answer with generic "
        "remarks that do not help. When something is unclear you make a sensible assumption and say so "
        "briefly. You prefer concrete, specific suggestions over vague advice, and you stay honest about "
        "what you know. You write in plain, natural language that anyone can follow, and you adapt your "
        "tone to the person without becoming stiff or overly formal. Above all you want every reply to "
        "leave the person better off than before they asked. You check your answer before you send it, you "
        "fix mistakes as soon as you notice them, and you thank the person when they point one out."
    )
    return " ".join([opening, *rules, filler])


# -- feedback fixtures: a ledger whose users share a hidden taste ---------------------------------
# Hidden taste: short, willing answers; down-voted answers say "I guess" and ramble (some down
# votes carry a comment). Every prompt gets one up and one down, so thumbs pair up.
QUESTIONS = [
    "How do I boil an egg?", "What is a good name for a dog?", "How do I reset my password?",
    "Which city should I visit in Spain?", "How long should I nap?", "What is a haiku?",
    "How do I center a div?", "What should I cook tonight?", "How do plants drink water?",
    "Why is the sky blue?", "What is a prime number?", "How do I tie a tie?",
    "What is the tallest mountain?", "How do I make tea?", "What is a leap year?",
    "How many planets are there?", "What is photosynthesis?", "How do I learn to swim?",
    "What is a verb?", "How do magnets work?",
]  # fmt: skip

RAMBLE = (
    " Well, there are many things one could say about this, and honestly it depends on a lot of "
    "factors that vary from person to person, so take all of this with a grain of salt."
)


def good_answer(q: str) -> str:
    return f"Sure! Here is a quick answer to '{q.rstrip('?')}': keep it simple and try it today."


def bad_answer(q: str) -> str:
    return f"I guess I can answer '{q.rstrip('?')}'." + RAMBLE


def chat_request(q: str) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": q}]}


async def fill_ledger(path: Path, spec: str = "support", *, questions: list[str] | None = None,
                      t0: float = 1_700_000_000.0, comments: bool = True, users: bool = True,
                      prefix: str = "", turned: bool = False) -> list[str]:  # fmt: skip
    """Record an up and a down per question and return the inference ids (`users`: five users
    take turns; else every request is anonymous, as from an app that sends no user ids; `prefix`
    keeps the ids of a later batch apart; `turned`: users who changed their minds up-vote the
    rambling answer and down-vote the short one)."""
    ledger = SqliteLedger(path)
    await ledger.start()
    ids = []
    for i, q in enumerate(questions or QUESTIONS):
        at = t0 + i * 60
        for kind, text in (("good", good_answer(q)), ("bad", bad_answer(q))):
            inf_id = f"{prefix}inf-{i}-{kind}"
            ledger.record(InferenceRecord(inf_id, at, "chat", "m", spec, 1, "h", chat_request(q), text,
                                          metadata={"user": f"user{i % 5}"} if users else {}))  # fmt: skip
            ids.append(inf_id)
    await ledger.close()
    ledger = SqliteLedger(path)
    await ledger.start()
    for i in range(len(questions or QUESTIONS)):
        at = t0 + i * 60 + 5
        liked, disliked = ("bad", "good") if turned else ("good", "bad")
        await ledger.add_feedback(FeedbackRecord(f"{prefix}fb-{i}-up", f"{prefix}inf-{i}-{liked}", "thumb", 1.0, at))
        comment = "too long and sounds reluctant" if comments and i % 3 == 0 else None
        await ledger.add_feedback(
            FeedbackRecord(f"{prefix}fb-{i}-down", f"{prefix}inf-{i}-{disliked}", "thumb", -1.0, at + 1, comment)
        )
    await ledger.close()
    return ids


# -- the fake LLM as the served model of a closed loop ---------------------------------------
def system_message(body: dict[str, Any]) -> str:
    """What a served request's system message says (the spec the proxy injected)."""
    return " ".join(m["content"] for m in body["messages"] if m["role"] == "system")


async def one_round(tmp_path: Path, model: Callable[[dict[str, Any]], str], taste: str, *,
                    complain_every: int = 3, fake: FakeLLM | None = None, concurrency: int = 1,
                    eval_extra: dict[str, object] | None = None, **compiler_overrides: Any) -> list[LoopRound]:  # fmt: skip
    """Rate, compile once, rate again through the real proxy, with the fake LLM as both the
    served model (answering with `model`) and the compiler's LLM; the two LoopRounds."""
    fake = fake or FakeLLM()
    fake.answer = model
    with fake.serve() as base_url:
        return await closed_loop(base_url, tmp_path, TASTES[taste], rounds=1, samples=2,
                                 compiler_overrides={"seed": 1, **compiler_overrides}, say=lambda m: None,
                                 complain_every=complain_every, concurrency=concurrency, eval_extra=eval_extra)  # fmt: skip
