"""Does a greedy answer of the embedded model depend on the requests before it?

The same spec and held-out questions are asked twice, after two different request histories, with
llama.cpp's prompt cache on (its default) and off; it prints how many answers were identical. This
is why the closed loop asks its held-out questions with `compiler.simulate.EVAL_LLAMA_CPP`.

    python -m bench.learning.prompt_cache            # ~3 min on 2 cores
"""

from __future__ import annotations

import argparse
import json

import httpx

from compiler.simulate import ASSISTANT, PROMPTS

SPEC = f'{ASSISTANT} End every answer with the line "Hope this helps!".'
HISTORIES = (ASSISTANT, "Vous êtes un assistant. Répondez en français, en une phrase.")


def ask(client: httpx.Client, url: str, system: str, question: str, cache: bool, max_tokens: int) -> str:
    body = {"model": "local", "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
            "max_tokens": max_tokens, "temperature": 0.0, "cache_prompt": cache}  # fmt: skip
    resp = client.post(f"{url}/chat/completions", json=body)
    resp.raise_for_status()
    return str(resp.json()["choices"][0]["message"]["content"])


def identical_after_histories(url: str, questions: list[str], cache: bool) -> int:
    """How many of `questions` get the same answer after each history."""
    runs = []
    with httpx.Client(timeout=300) as client:
        for history in HISTORIES:
            for q in PROMPTS[:3]:
                ask(client, url, history, q, cache, 40)
            runs.append([ask(client, url, SPEC, q, cache, 80) for q in questions])
    return sum(a == b for a, b in zip(*runs, strict=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.learning.prompt_cache", description=__doc__.split("\n")[0])
    p.add_argument("--questions", type=int, default=12, help="held-out questions (after the 20 training ones)")
    a = p.parse_args(argv)
    from proxy.local_model import LocalModelSupervisor
    from proxy.settings import Settings

    questions = PROMPTS[20 : 20 + a.questions]
    with LocalModelSupervisor.from_settings(Settings()) as served:
        result = {f"cache_prompt={c}": identical_after_histories(served.base_url, questions, c) for c in (True, False)}
    for arm, same in result.items():
        print(f"{arm}: {same}/{len(questions)} answers identical after two request histories")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
