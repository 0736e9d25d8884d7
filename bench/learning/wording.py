"""Which wording of a rule does the served model follow? One spec per wording, same questions.

A small model follows some phrasings of the same rule far more often than others (bench/README.md:
the closing line 4/12 as "End every answer with ...", 0/12 as "You end every answer with ...").
This sends each candidate spec as the system message with the held-out questions of the quality
benchmark (temperature 0) and counts the answers the taste likes.

    python -m bench.learning.wording --taste closing \\
        --spec 'You are a helpful assistant. End every answer with the line "Hope this helps!".' \\
        --spec 'You are a helpful assistant. You end every answer with the line "Hope this helps!".'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Iterator, Sequence

import httpx

from bench.learning.quality import wilson
from compiler.simulate import PROMPTS, TASTES, Taste


async def follow_rate(base_url: str, spec: str, questions: Sequence[str], taste: Taste, max_tokens: int) -> int:
    """How many answers under `spec` the taste likes (one request at a time: bit-exact at T=0)."""
    liked = 0
    async with httpx.AsyncClient(timeout=300) as client:
        for q in questions:
            messages = [{"role": "system", "content": spec}, {"role": "user", "content": q}]
            body = {"model": "local", "messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "seed": 0}
            resp = await client.post(f"{base_url}/chat/completions", json=body)
            resp.raise_for_status()
            liked += taste.likes(resp.json()["choices"][0]["message"]["content"] or "")
    return liked


@contextlib.contextmanager
def upstream(base_url: str | None) -> Iterator[str]:
    if base_url:
        yield base_url
        return
    from proxy.local_model import LocalModelSupervisor
    from proxy.settings import Settings

    with LocalModelSupervisor.from_settings(Settings(), threads=2, parallel=1) as m:  # one request at a time
        yield m.base_url


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.learning.wording", description=__doc__.split("\n")[0])
    p.add_argument("--taste", choices=sorted(TASTES), required=True)
    p.add_argument("--spec", action="append", required=True, help="a candidate spec (repeatable)")
    p.add_argument("--questions", type=int, default=12, help="held-out questions of the quality benchmark")
    p.add_argument("--max-tokens", type=int, help="default: the taste's answer cap")
    p.add_argument("--base-url", help="OpenAI-compatible upstream; default: the embedded local model")
    a = p.parse_args(argv)
    taste = TASTES[a.taste]
    questions = PROMPTS[20 : 20 + a.questions]
    with upstream(a.base_url) as base_url:
        for spec in a.spec:
            liked = asyncio.run(follow_rate(base_url, spec, questions, taste, a.max_tokens or taste.max_tokens))
            lo, hi = wilson(liked, len(questions))
            print(f"{liked}/{len(questions)} [{lo:.2f},{hi:.2f}]  {spec}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
