"""Sample a proxy under saturation with py-spy and say what dominates its hot path.

Why py-spy: it attaches to the running server from outside (``--pid`` with ``--subprocesses``
covers uvicorn workers), needs no code change in the proxy, and with ``--nonblocking`` does not
pause it. The speedscope file opens in https://www.speedscope.app; next to it a text summary
ranks functions and packages by the CPU samples they hold, which is what one reads first.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.performance import loadgen
from bench.performance.targets import REPO_DIR, Target


def find_py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


async def profile(
    target: Target, out_dir: Path, seconds: float, concurrency: int, stream: bool, rate: int = 200
) -> dict[str, Any]:
    """Closed-loop saturation for ``seconds`` + 2, with py-spy recording in the middle."""
    exe = find_py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed: pip install -e '.[bench]'")
    assert target.proc is not None
    kind = "stream" if stream else "json"
    path = out_dir / f"profile-{target.name}-{kind}.speedscope.json"
    session = loadgen.new_session(concurrency * 2, 60)
    job = loadgen.make_job(target.base_url, target.model, stream)
    load = asyncio.get_running_loop().create_task(loadgen.closed_loop(session, job, concurrency, seconds + 2.0))
    await asyncio.sleep(1.0)
    spy = await asyncio.create_subprocess_exec(
        exe,
        "record",
        "--pid",
        str(target.proc.pid),
        "--subprocesses",
        "--nonblocking",
        "--rate",
        str(rate),
        "--duration",
        str(int(seconds)),
        "--format",
        "speedscope",
        "-o",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    spy_out, _ = await spy.communicate()
    rec = await load
    await session.close()
    if spy.returncode != 0 or not path.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {spy_out.decode(errors='replace')[-2000:]}")
    summary = summarize_speedscope(path)
    summary.update(
        {
            "target": target.name,
            "stream": stream,
            "file": str(path),
            "achieved_rps_while_profiled": round(rec.achieved_rps(), 1),
            "errors": rec.error_count,
        }
    )
    (out_dir / f"profile-{target.name}-{kind}.txt").write_text(summary_text(summary))
    return summary


def _package(file: str) -> str:
    """Group frames: third-party package, our own top-level folder, or stdlib module."""
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    repo = str(REPO_DIR) + "/"
    if file.startswith(repo):
        rel = file[len(repo) :]
        return "/".join(rel.split("/")[:2]) if "/" in rel else rel
    if "/lib/python" in file:
        return "stdlib:" + file.rsplit("/lib/python", 1)[1].split("/", 2)[-1].split("/", 1)[0].removesuffix(".py")
    return file or "?"


def summarize_speedscope(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function, and self share per package."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    self_fn: Counter[int] = Counter()
    incl_fn: Counter[int] = Counter()
    self_pkg: Counter[str] = Counter()
    incl_pkg: Counter[str] = Counter()
    total = 0.0
    count = 0
    for prof in data["profiles"]:
        for stack, weight in zip(prof["samples"], prof["weights"], strict=True):
            # --subprocesses roots every stack in a synthetic "process N: cmdline" frame: drop it.
            stack = [i for i in stack if not frames[i]["name"].startswith("process ")]
            if not stack:
                continue
            total += weight
            count += 1
            self_fn[stack[-1]] += weight
            self_pkg[_package(frames[stack[-1]].get("file") or "")] += weight
            for idx in set(stack):
                incl_fn[idx] += weight
            for pkg in {_package(frames[i].get("file") or "") for i in stack}:
                incl_pkg[pkg] += weight

    def label(i: int) -> str:
        f = frames[i]
        return f"{f['name']} ({_short(f.get('file') or '?')}:{f.get('line')})"

    def share(c: Counter[Any], key_fn: Any) -> list[list[Any]]:
        return [[key_fn(k), round(100.0 * v / total, 2)] for k, v in c.most_common(top)] if total else []

    return {
        "samples": count,
        "self_pct_by_function": share(self_fn, label),
        "inclusive_pct_by_function": share(incl_fn, label),
        "self_pct_by_package": share(self_pkg, str),
        # "how much of the CPU is spent under X": e.g. the upstream client stack, the ledger
        "inclusive_pct_by_package": share(incl_pkg, str),
    }


def _short(file: str) -> str:
    for cut in ("site-packages/", str(REPO_DIR) + "/", "/lib/python3.11/"):
        if cut in file:
            return file.split(cut, 1)[1]
    return file


def summary_text(s: dict[str, Any]) -> str:
    lines = [
        f"py-spy profile of {s['target']} ({'streaming' if s['stream'] else 'non-streaming'}) under saturation: "
        f"{s['samples']} samples, {s['achieved_rps_while_profiled']} req/s while sampled",
        f"speedscope file: {s['file']}",
        "",
        "self time by package (% of samples):",
    ]
    lines += [f"  {pct:6.2f}  {name}" for name, pct in s["self_pct_by_package"]]
    lines += ["", "inclusive time by package (% of samples with a frame of it on the stack):"]
    lines += [f"  {pct:6.2f}  {name}" for name, pct in s["inclusive_pct_by_package"]]
    lines += ["", "self time by function:"]
    lines += [f"  {pct:6.2f}  {name}" for name, pct in s["self_pct_by_function"]]
    lines += ["", "inclusive time by function:"]
    lines += [f"  {pct:6.2f}  {name}" for name, pct in s["inclusive_pct_by_function"]]
    return "\n".join(lines) + "\n"
