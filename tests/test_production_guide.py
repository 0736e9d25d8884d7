"""docs/production.md is run as written: its ```sh test blocks, in order, in one bash, against a
fake upstream that answers and refuses as OpenAI does (tests/fake_hosted.py).

The run is a new team's first day: publish the prompt, serve, send traffic and thumbs, doctor,
compile with no compiler setting. It checks what the guide promises (the compiler asks the
traffic's model with the team's key, a version is published, the spec reaches the upstream) and
that the guide's cost figures still match a real round's report; the first compile's transcript
is written to first-compile.txt beside the run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import REPO, free_port
from tests.fake_hosted import KEY, FakeHosted, Seen
from tests.fake_llm import FakeLLM, bad_answer, good_answer

GUIDE = REPO / "docs" / "production.md"
BLOCK = re.compile(r"^```sh test\n(.*?)^```", re.S | re.M)
MARK = "::guide block {}::"
MODEL, EMBEDDING = "gpt-4o-mini", "text-embedding-3-small"
PRICE_IN, PRICE_OUT = 0.15 / 1e6, 0.60 / 1e6  # gpt-4o-mini list price, $ per token (docs/production.md)
TOLERANCE = 0.3  # the guide's cost figures against a fresh round: drift beyond this needs a new table


def guide_blocks() -> list[str]:
    return BLOCK.findall(GUIDE.read_text())


def app_answers() -> Callable[[dict[str, Any]], str]:
    """The served model: the first time a question is asked it answers well, the second time it
    hedges and rambles (the taste the guide's votes express)."""
    asked: dict[str, int] = {}

    def answer(body: dict[str, Any]) -> str:
        q = body["messages"][-1]["content"]
        asked[q] = asked.get(q, 0) + 1
        return good_answer(q) if asked[q] % 2 else bad_answer(q)

    return answer


def run_guide(tmp_path: Path, url: str) -> tuple[int, str]:
    script = "\n".join(f'echo "{MARK.format(i)}"\n{block}' for i, block in enumerate(guide_blocks()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECLEARN_")}
    env.update(PATH=f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}", OPENAI_API_KEY=KEY,
               SPECLEARN_UPSTREAM_URL=url, PORT=str(free_port()))  # fmt: skip
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=900)
    finally:
        try:  # the proxy the guide started in the background, if a block failed before `kill`
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return proc.returncode, out


def block_output(out: str, containing: str) -> str:
    """What the guide block whose text contains `containing` printed."""
    index = next(i for i, b in enumerate(guide_blocks()) if containing in b)
    after = out.split(MARK.format(index) + "\n", 1)[1]
    return after.split("::guide block ", 1)[0]


def compiler_calls(fake: FakeHosted) -> list[Seen]:
    """The compile round's requests (the compiler's prompts start with `TASK:`)."""
    return [s for s in fake.chats() if str(s.body["messages"][-1]["content"]).startswith("TASK:")]


def test_the_production_guide_runs_as_written(tmp_path: Path) -> None:
    fake = FakeHosted(fake=FakeLLM(answer=app_answers()), chat_models=frozenset({MODEL}), reasoning=frozenset(),
                      no_logprobs=frozenset(), embedding_models=frozenset({EMBEDDING}))  # fmt: skip
    with fake.serve() as url:
        code, out = run_guide(tmp_path, url)
    assert code == 0, out[-6000:]

    transcript = block_output(out, "speclearn compile support")
    (tmp_path / "first-compile.txt").write_text(transcript)
    print(transcript)
    assert f"compiler model {MODEL}: used by 41 of 41 of spec support's answered requests" in transcript
    assert "result: published -> support@2" in transcript
    doctor = block_output(out, "speclearn doctor support")
    assert "problem:" not in doctor and f"ok: embeddings: {EMBEDDING}" in doctor, doctor

    # the compiler asked the traffic's model with the team's key; embeddings the embedding model
    calls = compiler_calls(fake)
    assert (
        calls and {c.body["model"] for c in calls} == {MODEL} and {c.authorization for c in calls} == {f"Bearer {KEY}"}
    )
    assert {s.body["model"] for s in fake.seen if s.path == "/v1/embeddings"} == {EMBEDDING}
    # the app's traffic reached the upstream with the person's prompt injected, byte for byte
    served = [c for c in fake.chats() if c not in calls and c.body["messages"][0]["role"] == "system"]
    assert served and all(c.body["messages"][0]["content"].startswith("# ACME support assistant") for c in served)

    # the report's cost is what reached the upstream, and the guide's table still says it
    reported = re.search(r"^cost: (\d+) LLM calls, (\d+) tokens", transcript, re.M)
    assert reported is not None, transcript
    n_calls, tokens = int(reported.group(1)), int(reported.group(2))
    assert n_calls == len(calls) and tokens == sum(int(c.usage["total_tokens"]) for c in calls if c.usage)
    prompt = sum(int(c.usage["prompt_tokens"]) for c in calls if c.usage)
    completion = sum(int(c.usage["completion_tokens"]) for c in calls if c.usage)
    dollars = prompt * PRICE_IN + completion * PRICE_OUT
    (tmp_path / "round-cost.txt").write_text(f"calls={n_calls} tokens={tokens} prompt={prompt} "
                                             f"completion={completion} dollars={dollars:.4f}\n")  # fmt: skip
    print(f"round cost: calls={n_calls} tokens={tokens} prompt={prompt} completion={completion} ${dollars:.4f}")
    stated = re.search(r"<!-- cost-check: calls=(\d+) tokens=(\d+)", GUIDE.read_text())
    assert stated is not None, "docs/production.md lost its cost-check line"
    for name, says, measured in (("calls", int(stated.group(1)), n_calls), ("tokens", int(stated.group(2)), tokens)):
        assert abs(says - measured) <= TOLERANCE * measured, (
            f"docs/production.md states {says} {name} a round, a round now takes {measured}: update section 8"
        )
