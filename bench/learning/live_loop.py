"""The live loop: the served thumbs-up rate over simulated days, proxy and sidecar running.

The product's loop runs for days: the proxy serves a spec, users vote and comment, the compiler
sidecar compiles now and then and, with a canary share, publishes each new version as `candidate`
to a sticky share of users, promoted or rolled back by the always-valid test on live thumbs. This
benchmark runs that loop as it ships, in compressed time:

- a real `speclearn serve` (canary share CANARY of users, by a stable hash of their id) and a real
  `speclearn compiler --auto-promote` sidecar beside it (a pass every INTERVAL s; a spec is due
  after one day's feedback, `--min-feedback` = `--events-per-day`), on fresh specs and ledger per
  world, starting from the static prompt "You are a helpful assistant." as production;
- simulated users (bench/learning/live_worlds.py: sticky ids, hidden tastes, half of them write
  the taste's complaint on a down vote) ask `--events-per-day` questions a day through the
  OpenAI HTTP API (path form /specs/live/v1, as an app would) and send a thumb on every answer;
- a day ends when its feedback is on disk; then the sidecar is awaited, never with a fixed sleep:
  its state file records a round begun after the day's last feedback (or its log a crashed round)
  and, by the sidecar's own test (compiler.sidecar.due), it is not due again; the ledger then says
  which version and arm served each request, and the decision log what the review decided. Then
  the next day. After the last day nothing more is served, so no round is awaited.

Arms on the same day's events (same users, questions and sampling seeds): `speclearn` (what the
proxy served), `static` (the starting prompt all along) and `oracle` (the taste stated outright,
compiler.simulate Taste.oracle; in `drift` the taste in force that day). The two constant arms
ask the model server directly, not through the proxy, so they leave no feedback in the ledger.

Cost: with llama.cpp's prompt cache off (compiler.simulate.EVAL_LLAMA_CPP) and a sampling seed
from a small fixed set (live_worlds.SEEDS, temperature 0.8: the compiler needs two different
answers to one question to see a contrast), an answer is a function of its request. A caching
shim (bench/learning/live_cache.py) between the proxy and the model serves every repeated request
from disk (bench/results/live-loop-cache/, gitignored, kept between runs): the static spec's
answers are shared by every world and every run, and any version's answer to a question is
computed once. The compiler's own LLM calls use the compiler's cache (live-loop-cache/compiler).
Because a replay is instant, latency means nothing here: the latency guardrail is turned off
(ratio GUARDRAIL_LATENCY); the error and tokens guardrails stay as shipped.

Measures (bench/learning/live_metrics.py): per world and day the events so far, the served
up-rate with its Wilson 95% interval, the static and oracle rates, the versions and the label mix
served (production vs candidate share); per world to_0.9 (feedback events before the first day
served >= 0.9 x oracle), regret (thumbs-up lost against the oracle: the sum over days of events x
(oracle rate - served rate)), exposure (the share of served requests answered by a version later
rolled back), promotions and rollbacks (the decision log), and the compiler's LLM calls and tokens
(its Prometheus counters: uncached calls). `aa` (no taste) runs `--aa-seeds` seeds; its line pools
them, and the line before the last ones says in how many seeds anything was promoted, against alpha.

    python -m bench.live_loop                                 # every world, embedded models
    python -m bench.live_loop --world short --days 4          # one world
    python -m bench.live_loop --quick                         # one world, 3 short days (CI size)
    python -m bench.live_loop --base-url URL --quick          # another upstream (and compiler LLM)

Writes JSON to `--out` (default bench/results/live_loop.json) and a plot beside it (.png). The last
lines of stdout, one per world: `WORLD: to_0.9 E regret R exposure X promotions P rollbacks B`.

Not measured: real users (simulated, with a checkable taste), a production model (the embedded
0.5B, the 1.5B judging), time (a day is the minutes its requests take; the ledger window spans
every simulated day).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from compiler.simulate import ASSISTANT, EVAL_LLAMA_CPP, free_port
from compiler.tuning import PROMOTE_ALPHA
from proxy.config import write_tuning
from proxy.local_model.supervisor import terminate

from . import live_metrics as m
from .live_cache import AnswerCache, serve_cache
from .live_worlds import AA, COMPLAINERS, QUESTIONS, TEMPERATURE, USERS, WORLDS, Event, World, check_worlds

SPEC = "live"
RESULTS = Path(__file__).resolve().parents[1] / "results"
DEFAULT_OUT = RESULTS / "live_loop.json"
CACHE_DIR = RESULTS / "live-loop-cache"
CANARY = 0.5  # the most thumbs per arm for the test (the hash of 40 user ids puts 26 on the candidate)
INTERVAL = 2.0  # seconds between sidecar passes: a round starts within seconds of a day's end
PROMOTE_MIN = 50  # thumbs per arm before the test looks: as shipped
GUARDRAIL_MIN = 50  # requests per arm before the guardrails judge (shipped 100): a day's production arm
GUARDRAIL_LATENCY = 1000.0  # replayed answers are instant: latency is no signal behind the cache
PASS_TIMEOUT = 1800.0  # a sidecar pass that takes longer is a failure of the run
# One day should give both arms the live test's burn-in (a round waits while a test decides):
# 150 events put ~53 on production. Events are cheap (a version's answers are computed
# once); days are not (a compile round each). Measured on 2 cores (2026-12-07): one world cold in
# 6 min, every world (11 runs) in 36 min with the first world's answers and rounds cached.
FULL = {"days": 3, "events_per_day": 150, "aa_seeds": 3}
QUICK = {"days": 3, "events_per_day": 12, "aa_seeds": 1, "worlds": ["short"]}


# -- the processes ------------------------------------------------------------------------------
def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment without the caller's speclearn settings, plus `extra`: each world is hermetic."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SPECLEARN_")}, **extra}


@contextlib.contextmanager
def child(cmd: list[str], env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process logging to `log`, terminated (then killed) when the block exits."""
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        terminate(proc, 15)


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(map(str, proc.args))} exited {proc.returncode}:\n{tail(log)}")  # type: ignore[arg-type]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready in {timeout:.0f} s: {url}\n{tail(log)}")
        time.sleep(0.2)


@dataclass(frozen=True)
class Endpoints:
    model_url: str  # the served model (behind the cache) and the compiler's LLM
    model: str
    judge_url: str | None
    judge_model: str | None


def compiler_tuning(a: argparse.Namespace) -> dict[str, object]:
    """The sidecar's constants ([compiler.tuning]): bench.quality's small round budget, the
    canary's burn-ins sized to a day, the latency guardrail off, the compiler cache kept."""
    return {"proposal_passes": 2, "proposal_sample": 8, "propose_max_tokens": 96, "synth_max_tokens": 256,
            "validation_pairs": 4, "calibration_pairs": 4, "gate_pairs": 8,
            "promote_min_feedback": a.promote_min, "guardrail_min_requests": a.guardrail_min,
            "guardrail_max_latency_ratio": GUARDRAIL_LATENCY, "cache_dir": str(a.cache_dir / "compiler")}  # fmt: skip


def compiler_env(ep: Endpoints, a: argparse.Namespace) -> dict[str, str]:
    env = {"SPECLEARN_COMPILER_BASE_URL": ep.model_url, "SPECLEARN_COMPILER_MODEL": ep.model,
           "SPECLEARN_COMPILER_MAX_LLM_CALLS": str(a.max_calls)}  # fmt: skip
    if ep.judge_url and ep.judge_model:
        env |= {"SPECLEARN_COMPILER_JUDGE_BASE_URL": ep.judge_url, "SPECLEARN_COMPILER_JUDGE_MODEL": ep.judge_model}
    return env


# -- reading what the sidecar did ----------------------------------------------------------------
def read_state(data: Path) -> dict[str, Any]:
    try:
        entry = json.loads((data / "compiler" / "state.json").read_text()).get(SPEC)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return entry if isinstance(entry, dict) else {}


CRASH = re.compile(r"round crashed|compiler tick failed")


async def sidecar_view(
    data: Path, specs: Path, min_feedback: int, canary: float, after: float
) -> tuple[bool, str, bool]:
    """What the sidecar's next pass would do: compile again or not, and why (its own test,
    compiler.sidecar.due), and whether it reviewed the live test since `after` (True when no test
    is running)."""
    from compiler.runner import Context
    from compiler.runner import canary as live_test
    from compiler.settings import CompilerSettings
    from compiler.sidecar import due
    from proxy.ledger import open_ledger
    from proxy.registry import FileRegistry
    from proxy.settings import Settings

    settings = Settings(data_dir=data, specs_dir=specs, database_url=None, canary_fraction=canary)
    registry = FileRegistry(specs, poll_interval=0)
    ledger = open_ledger(settings)
    await ledger.start()
    try:
        ctx = Context(settings, CompilerSettings(min_feedback=min_feedback), registry, ledger)
        running = (await live_test(ctx, SPEC)).running is not None
        go, why = await due(ctx, SPEC, time.time())
        looked = not running or any(d.created_at > after for d in await ledger.decisions(SPEC, limit=1))
    finally:
        await ledger.close()
    return go, why, looked


async def await_pass(
    data: Path, specs: Path, log: Path, proc: subprocess.Popen[bytes], day_end: float, a: argparse.Namespace
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Wait until the sidecar is done with the day: it reviewed the live test on the day's thumbs
    (a round waits while one decides), recorded a round begun after `day_end` (the day's feedback
    made the spec due) and, by its own test, is not due again; or it logged one more crash.
    Returns its state and the rounds it recorded meanwhile."""
    deadline = time.monotonic() + PASS_TIMEOUT
    crashes = len(CRASH.findall(tail(log, 10**9)))
    rounds: list[dict[str, Any]] = []
    since, asked = day_end, time.monotonic()
    while True:
        state = read_state(data)
        at = float(state.get("last_round_at") or 0)
        if at > since:
            rounds.append({"result": state.get("last_result"), "reason": str(state.get("last_reason") or ""),
                           "published": state.get("last_published"), "at": at})  # fmt: skip
            since = at
            go, _, _ = await sidecar_view(data, specs, a.events_per_day, a.canary, day_end)
            if not go:
                return state, rounds
        elif not rounds and time.monotonic() - asked > 2.0:  # not due at all (say, backing off): nothing to wait for
            asked = time.monotonic()
            go, why, looked = await sidecar_view(data, specs, a.events_per_day, a.canary, day_end)
            if looked and not go and float(read_state(data).get("last_round_at") or 0) <= since:
                return {**state, "last_result": "not due", "last_reason": why}, rounds
        if len(CRASH.findall(tail(log, 10**9))) > crashes:
            return {**state, "last_result": "crashed", "last_reason": tail(log, 600)}, rounds
        if proc.poll() is not None:
            raise RuntimeError(f"the sidecar exited {proc.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no sidecar round in {PASS_TIMEOUT:.0f} s after the day:\n{tail(log)}")
        await asyncio.sleep(0.2)


COUNTER = re.compile(r'^speclearn_compiler_(llm_calls|tokens)_total\{spec="' + SPEC + r'"\} ([0-9.e+]+)$', re.M)


def compiler_cost(metrics_port: int) -> dict[str, int]:
    """The sidecar's uncached LLM calls and tokens so far (its Prometheus counters)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {"llm_calls": 0, "tokens": 0}
    found = {k: int(float(v)) for k, v in COUNTER.findall(text)}
    return {"llm_calls": found.get("llm_calls", 0), "tokens": found.get("tokens", 0)}


# -- one day ---------------------------------------------------------------------------------------
def body(event: Event, max_tokens: int, system: str | None = None) -> dict[str, Any]:
    """The request a user's app sends (`system`: as the proxy forwards it, the spec first)."""
    messages = [{"role": "user", "content": event.prompt}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return {"model": "local", "messages": messages, "max_tokens": max_tokens, "temperature": TEMPERATURE,
            "seed": event.seed, "user": event.user, **EVAL_LLAMA_CPP}  # fmt: skip


def served_text(text: str) -> str:
    """A spec's text as the registry stores and the proxy injects it (one final newline)."""
    return text if text.endswith("\n") else text + "\n"


async def answer(client: httpx.AsyncClient, url: str, payload: dict[str, Any]) -> httpx.Response:
    """An answer, as an app asks it: a dropped connection is retried once, an error status raises."""
    try:
        resp = await client.post(url, json=payload)
    except httpx.TransportError:
        resp = await client.post(url, json=payload)
    resp.raise_for_status()
    return resp


def text_of(resp: httpx.Response) -> str:
    return str(resp.json()["choices"][0]["message"]["content"] or "")


async def run_day(client: httpx.AsyncClient, world: World, day: int, proxy: str, shim: str,
                  a: argparse.Namespace) -> list[dict[str, Any]]:  # fmt: skip
    """The day's events: each served through the proxy, rated, its thumb posted; the static and
    oracle arms asked of the model (behind the cache) and rated by the same user."""
    taste = world.taste(day)
    tokens = world.max_tokens(day)
    gate = asyncio.Semaphore(a.concurrency)

    async def one(e: Event) -> dict[str, Any]:
        async with gate:
            resp = await answer(client, f"{proxy}/specs/{SPEC}/v1/chat/completions", body(e, tokens))
            up = world.rate(day, e, text_of(resp))
            feedback: dict[str, Any] = {"inference_id": resp.headers["x-inference-id"], "value": "up" if up else "down"}
            comment = None if up else world.complaint(day, e)
            if comment:
                feedback["comment"] = comment
            (await client.post(f"{proxy}/v1/feedback", json=feedback)).raise_for_status()
            fed_at = time.time()  # the day's last one makes the spec due: its round starts after it
            if taste is None:  # the coin: every arm gets the same thumb, whatever it answers
                static = oracle = up
            else:
                url = f"{shim}/chat/completions"
                static = taste.likes(text_of(await answer(client, url, body(e, tokens, served_text(ASSISTANT)))))
                oracle = taste.likes(text_of(await answer(client, url, body(e, tokens, served_text(taste.oracle)))))
            return {"id": resp.headers["x-inference-id"], "version": resp.headers.get("x-spec-version", "none"),
                    "up": up, "static": static, "oracle": oracle, "comment": bool(comment), "fed_at": fed_at}  # fmt: skip

    return list(await asyncio.gather(*(one(e) for e in world.events(day, a.events_per_day))))


Served = dict[str, tuple[str | None, float]]  # inference id -> (canary arm, when)


async def arms_served(data: Path, specs: Path, since: float) -> tuple[Served, list[dict[str, Any]]]:
    """From the ledger: the canary arm and time of each inference since `since`, and the decision log."""
    from proxy.ledger import open_ledger
    from proxy.settings import Settings

    ledger = open_ledger(Settings(data_dir=data, specs_dir=specs, database_url=None))
    await ledger.start()
    try:
        arms = {ev.inference.id: (ev.inference.arm, ev.inference.created_at)
                for ev in await ledger.feedback_events(spec=SPEC, since=since)}  # fmt: skip
        decisions = [d.to_dict() for d in await ledger.decisions(SPEC)]
    finally:
        await ledger.close()
    return arms, decisions


async def labels(specs: Path) -> dict[str, Any]:
    from proxy.registry import FileRegistry

    registry = FileRegistry(specs, poll_interval=0)
    await registry.refresh()
    state = registry.snapshot.specs.get(SPEC)
    if state is None:
        return {}
    return {"labels": dict(state.labels), "versions": sorted(state.versions)}


# -- one world -------------------------------------------------------------------------------------
async def run_world(world: World, ep: Endpoints, shim: str, a: argparse.Namespace) -> dict[str, Any]:
    from proxy.registry import FileRegistry

    started = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{world.name}/{world.seed}] {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix=f"speclearn-live-{world.name}-") as tmp:
        specs, data = Path(tmp) / "specs", Path(tmp) / "data"
        data.mkdir(parents=True)
        registry = FileRegistry(specs, poll_interval=0)
        await registry.set_instruction(SPEC, ASSISTANT + "\n")
        await registry.publish(SPEC, ASSISTANT, labels=["production"])
        config = write_tuning(data / "config.toml", proxy={"registry_poll_interval": 0.2}, compiler=compiler_tuning(a))
        # both processes read the canary share, as from one deployment's configuration: the proxy
        # splits users, the sidecar explores on it and waits while its live test decides
        common = {"SPECLEARN_SPECS_DIR": str(specs), "SPECLEARN_DATA_DIR": str(data),
                  "SPECLEARN_CANARY_FRACTION": str(a.canary), **config}  # fmt: skip
        port, metrics_port = free_port(), free_port()
        proxy_env = clean_env({**common, "SPECLEARN_UPSTREAM_URL": shim})
        sidecar_env = clean_env({**common, **compiler_env(ep, a)})
        proxy_log, sidecar_log = data / "proxy.log", data / "sidecar.log"
        serve = [sys.executable, "-m", "proxy.cli", "serve", "--port", str(port), "--log-level", "warning"]
        sidecar = [sys.executable, "-m", "proxy.cli", "compiler", "--auto-promote", "--interval", str(a.interval),
                   "--min-feedback", str(a.events_per_day), "--metrics-port", str(metrics_port)]  # fmt: skip
        days: list[dict[str, Any]] = []
        with child(serve, proxy_env, proxy_log) as proxy_proc, child(sidecar, sidecar_env, sidecar_log) as side:
            root = f"http://127.0.0.1:{port}"
            wait_ready(root + "/readyz", proxy_proc, proxy_log)
            wait_ready(f"http://127.0.0.1:{metrics_port}/metrics", side, sidecar_log)
            cost_before = compiler_cost(metrics_port)
            so_far = 0
            async with httpx.AsyncClient(timeout=600) as client:
                for day in range(a.days):
                    day_started, t0 = time.time(), time.monotonic()
                    rows = await run_day(client, world, day, root, shim, a)
                    # the last feedback, not the end of the arms: a cached round can finish before them
                    day_end = max((r["fed_at"] for r in rows), default=time.time())
                    rounds: list[dict[str, Any]] = []
                    if day < a.days - 1:  # after the last day nothing more is served: no round to wait for
                        state, rounds = await await_pass(data, specs, sidecar_log, side, day_end, a)
                    else:
                        state = {"last_result": "not awaited (the last day)"}
                    arms, decisions = await arms_served(data, specs, day_started)
                    cost = compiler_cost(metrics_port)
                    so_far += len(rows)
                    days.append(day_record(world, day, rows, arms, decisions, day_started, state, so_far,
                                           await labels(specs), cost, cost_before, time.monotonic() - t0,
                                           days, rounds))  # fmt: skip
                    cost_before = cost
                    d = days[-1]
                    say(f"day {day}: served {d['served']['rate']:.2f} static {d['static']['rate']:.2f} "
                        f"oracle {d['oracle']['rate']:.2f}; {d['versions']} candidate share "
                        f"{d['label_mix']['candidate']:.2f}; round {d['compile']['result']} "
                        f"({d['compile']['reason'][:120]}); labels {d['after']['labels']}")  # fmt: skip
            _, decisions = await arms_served(data, specs, time.time())
    return summarize(world, days, decisions, time.monotonic() - started)


def day_record(world: World, day: int, rows: list[dict[str, Any]], arms: Served,
               decisions: list[dict[str, Any]], since: float, state: Mapping[str, Any], so_far: int,
               after: dict[str, Any], cost: dict[str, int], cost_before: dict[str, int],
               seconds: float, days_before: list[dict[str, Any]],
               rounds: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    n = len(rows)
    versions: dict[str, int] = {}
    for r in rows:
        versions[r["version"]] = versions.get(r["version"], 0) + 1
    # the candidate's share: canary requests served a version that was not production then
    # (after a promotion or a rollback both labels name one version)
    promoted = [(d["created_at"], d["candidate"]) for d in decisions if d["decision"] == "promote"]
    start = (days_before[-1]["after"].get("labels") or {}).get("production", 1) if days_before else 1
    canary = [(int(r["version"].rpartition("@")[2]), arms[r["id"]][1]) for r in rows
              if r["id"] in arms and arms[r["id"]][0] == "candidate" and r["version"].rpartition("@")[2].isdigit()]  # fmt: skip
    cand = sum(1 for version, at in canary if version != m.production_at(at, start, promoted))
    taste = world.taste(day)
    return {
        "day": day, "taste": taste.name if taste else None, "events": n, "events_so_far": so_far,
        "comments": sum(r["comment"] for r in rows),
        "served": m.arm(sum(r["up"] for r in rows), n), "static": m.arm(sum(r["static"] for r in rows), n),
        "oracle": m.arm(sum(r["oracle"] for r in rows), n),
        "versions": versions,
        "label_mix": {"candidate": round(cand / n, 3) if n else 0.0,
                      "production": round(1 - cand / n, 3) if n else 0.0},
        "canary_arm": round(sum(1 for r in rows if arms.get(r["id"], (None, 0))[0] == "candidate") / n, 3) if n else 0.0,
        "decisions": [{k: d[k] for k in ("decision", "candidate", "production", "reason", "p_value", "lift")}
                      for d in decisions if d["created_at"] >= since and d["decision"] != "continue"],
        "looks": sum(1 for d in decisions if d["created_at"] >= since),
        "compile": {"result": state.get("last_result"), "reason": str(state.get("last_reason") or ""),
                    "published": state.get("last_published")},
        "rounds": rounds,  # every round the sidecar ran before it was done with the day (usually one)
        "after": after,
        "compiler": {k: cost[k] - cost_before[k] for k in cost},
        "seconds": round(seconds, 1),
    }  # fmt: skip


def summarize(
    world: World, days: list[dict[str, Any]], decisions: list[dict[str, Any]], seconds: float
) -> dict[str, Any]:
    counts = [{"events": d["events"], "served": d["served"]["ups"], "oracle": d["oracle"]["ups"],
               "versions": d["versions"]} for d in days]  # fmt: skip
    rolled = {f"{SPEC}@{d['candidate']}" for d in decisions if d["decision"] == "rollback"}
    return {
        "world": world.name, "seed": world.seed, "days": days,
        "to_0.9": m.to_ratio(counts), "regret": m.regret(counts), "exposure": round(m.exposure(counts, rolled), 4),
        "promotions": sum(1 for d in decisions if d["decision"] == "promote"),
        "rollbacks": sum(1 for d in decisions if d["decision"] == "rollback"),
        "rolled_back_versions": sorted(rolled),
        "served_requests": sum(d["events"] for d in days),
        "compiler": {k: sum(d["compiler"][k] for d in days) for k in ("llm_calls", "tokens")},
        "seconds": round(seconds, 1),
    }  # fmt: skip


# -- the report ------------------------------------------------------------------------------------
def fmt(x: Mapping[str, Any]) -> str:
    lo, hi = x["wilson95"]
    return f"{x['rate']:.2f} [{lo:.2f},{hi:.2f}]"


def table(runs: list[dict[str, Any]]) -> str:
    lines = ["| world | seed | day | events so far | served [Wilson 95%] | static | oracle | versions served "
             "| candidate share | round | labels after |", "|" + "---|" * 11]  # fmt: skip
    for r in runs:
        for d in r["days"]:
            versions = ", ".join(f"{k} {v}" for k, v in sorted(d["versions"].items()))
            lines.append(f"| {r['world']} | {r['seed']} | {d['day']} | {d['events_so_far']} | {fmt(d['served'])} "
                         f"| {d['static']['rate']:.2f} | {d['oracle']['rate']:.2f} | {versions} "
                         f"| {d['label_mix']['candidate']:.2f} | {d['compile']['result']} "
                         f"| {d['after'].get('labels', {})} |")  # fmt: skip
    return "\n".join(lines)


def by_world(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    names = list(dict.fromkeys(r["world"] for r in runs))
    return {n: m.pooled([r for r in runs if r["world"] == n]) for n in names}


def plot(runs: list[dict[str, Any]], path: Path) -> str | None:
    """One panel per world: each seed's served rate with its Wilson band (the first seed's line
    thicker), and the first seed's static and oracle rates."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no plot"
    worlds: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        worlds.setdefault(r["world"], []).append(r)
    cols = min(3, len(worlds))
    rows = -(-len(worlds) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharey=True)
    panels: list[Any] = list(axes.flat)
    for ax, (world, seeds) in zip(panels, worlds.items(), strict=False):
        for i, r in enumerate(seeds):
            x = [d["events_so_far"] for d in r["days"]]
            ax.plot(x, [d["served"]["rate"] for d in r["days"]], "o-", color="C0", linewidth=2 if i == 0 else 1,
                    alpha=1 if i == 0 else 0.6, label="speclearn (served, each seed)" if i == 0 else None)  # fmt: skip
            ax.fill_between(x, [d["served"]["wilson95"][0] for d in r["days"]],
                            [d["served"]["wilson95"][1] for d in r["days"]], color="C0", alpha=0.15)  # fmt: skip
        first = seeds[0]
        x = [d["events_so_far"] for d in first["days"]]
        ax.plot(x, [d["static"]["rate"] for d in first["days"]], "s--", color="C1", label="static")
        ax.plot(x, [d["oracle"]["rate"] for d in first["days"]], "^:", color="C2", label="oracle")
        ax.set_title(world if len(seeds) == 1 else f"{world} ({len(seeds)} seeds)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("feedback events")
    for ax in panels[len(worlds) :]:
        ax.axis("off")
    panels[0].set_ylabel("thumbs-up rate")
    panels[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# -- the command -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.live_loop", description=__doc__.split("\n")[0])
    p.add_argument("--world", action="append", help=f"repeatable; default: {', '.join(WORLDS)}")
    p.add_argument("--quick", action="store_true", help="one world (short), 3 days of 12 events: a smoke run")
    p.add_argument("--days", type=int, help=f"simulated days per world (default {FULL['days']})")
    p.add_argument("--events-per-day", type=int, help=f"feedback events a day (default {FULL['events_per_day']})")
    p.add_argument("--questions", type=int, default=QUESTIONS, help="questions users ask (the first N of PROMPTS)")
    p.add_argument("--seeds", type=int, default=1, help="seeds of every world but aa")
    p.add_argument("--aa-seeds", type=int, help=f"seeds of the aa world (default {FULL['aa_seeds']})")
    p.add_argument("--canary", type=float, default=CANARY, help="SPECLEARN_CANARY_FRACTION of the proxy")
    p.add_argument("--interval", type=float, default=INTERVAL, help="seconds between the sidecar's passes")
    p.add_argument("--promote-min", type=int, default=PROMOTE_MIN, help="thumbs per arm before the test looks")
    p.add_argument("--guardrail-min", type=int, default=GUARDRAIL_MIN, help="requests per arm for the guardrails")
    p.add_argument("--concurrency", type=int, default=4, help="users asking at once")
    p.add_argument("--max-calls", type=int, default=160, help="LLM call budget of one compile round")
    p.add_argument("--base-url", help="OpenAI-compatible upstream and compiler LLM; default: the embedded models")
    p.add_argument("--judge-model", default="qwen2.5-coder-1.5b",
                   help="the compiler's judge, an embedded model ('none': the compiler's own model judges)")  # fmt: skip
    p.add_argument("--judge-base-url", help="the judge's endpoint instead of an embedded model")
    p.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="the answer and compiler caches")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    size = QUICK if a.quick else FULL
    a.days = a.days or size["days"]
    a.events_per_day = a.events_per_day or size["events_per_day"]
    a.aa_seeds = a.aa_seeds or size["aa_seeds"]
    a.world = check_worlds(a.world or list(QUICK["worlds"] if a.quick else WORLDS))  # type: ignore[call-overload]
    if a.days < 1 or a.events_per_day < 1:
        p.error("--days and --events-per-day must be at least 1")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    # a terminated run unwinds, so its proxy, sidecar and model servers stop with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    cache_stats: dict[str, int] = {}

    def write() -> None:
        report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
                  "compiler_tuning": compiler_tuning(a), "users": len(USERS), "complainers": COMPLAINERS,
                  "runs": runs, "worlds": by_world(runs), "cache": cache_stats,
                  "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=2, default=str) + "\n")

    def run_all(base_url: str, model: str) -> None:
        ep = Endpoints(base_url, model, a.judge_base_url, a.judge_model if a.judge_base_url else None)
        cache = AnswerCache(a.cache_dir / "answers" / model, base_url)  # one model's answers
        with serve_cache(cache) as shim:
            for name in a.world:
                for seed in range(a.aa_seeds if name == AA else a.seeds):
                    world = World(name, a.days, seed, a.questions)
                    runs.append(asyncio.run(run_world(world, ep, shim, a)))
                    cache_stats.update(hits=cache.hits, misses=cache.misses)
                    write()  # a partial report survives an interrupted run

    from .quality import on_served_model

    on_served_model(a, run_all)
    write()
    problem = plot(runs, a.out.with_suffix(".png"))
    print(table(runs))
    if problem:
        print(problem)
    summary = by_world(runs)
    print(f"\nanswers: {cache_stats.get('misses', 0)} computed, {cache_stats.get('hits', 0)} replayed from the cache; "
          f"{time.monotonic() - started:.0f} s; JSON {a.out}")  # fmt: skip
    for r in runs:
        print(f"{r['world']}/{r['seed']}: compiler {r['compiler']['llm_calls']} LLM calls, "
              f"{r['compiler']['tokens']} tokens; {r['seconds']:.0f} s")  # fmt: skip
    if AA in summary:
        s = summary[AA]
        print(f"aa: promotions in {s['seeds_with_promotion']} of {s['seeds']} seeds (alpha {PROMOTE_ALPHA})")
    for name, s in summary.items():
        print(m.final_line(name, s["to_0.9"], s["regret"], s["exposure"], s["promotions"], s["rollbacks"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
