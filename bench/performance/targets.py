"""The three things measured: the mock itself, speclearn in front of it, LiteLLM in front of it.

All three get the same mock, the same cores and the same worker count, so a difference between
them is the proxy's. LiteLLM lives in its own virtualenv (``bench/.venv-litellm``) because its
dependency pins must not leak into speclearn's environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.performance import procs

BENCH_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = BENCH_DIR.parent
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
# Pinned so numbers are comparable between runs; 1.107.0 was a compromised release, and the
# [proxy] extra of 1.110.x needs a `litellm-proxy` distribution the index does not serve.
LITELLM_REQUIREMENT = "litellm[proxy]==1.108.7"
MARKER = "SPECLEARN-BENCH-MARKER"
SPEC_TEXT = (
    f"You are a concise, friendly assistant for the speclearn benchmark. Answer in one short sentence. ({MARKER})\n"
)


@dataclass
class Target:
    """Where the load generator sends requests, and which process tree is charged for them."""

    name: str
    base_url: str  # ends in /v1
    model: str
    proc: procs.Managed | None  # None for "direct": the mock is harness, not target


def start_mock(
    log_dir: Path, cpus: set[int] | None, tokens: int, delay_ms: float, chunk_delay_ms: float
) -> tuple[procs.Managed, int]:
    port = procs.free_port()
    cmd = [
        sys.executable,
        "-m",
        "bench.performance.mock_upstream",
        "--port",
        str(port),
        "--tokens",
        str(tokens),
        "--delay-ms",
        str(delay_ms),
        "--chunk-delay-ms",
        str(chunk_delay_ms),
        "--marker",
        MARKER,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    mock = procs.start("mock", cmd, log_dir, env=env, cpus=cpus, cwd=REPO_DIR)
    procs.wait_http_ok(mock, f"http://127.0.0.1:{port}/health", 15)
    return mock, port


def write_spec_dir(root: Path) -> Path:
    """A ``default`` spec at label ``production``, laid out as the registry expects it."""
    spec = root / "specs" / "default"
    (spec / "versions").mkdir(parents=True, exist_ok=True)
    (spec / "versions" / "0001.md").write_text("---\nversion: 1\n---\n" + SPEC_TEXT)
    (spec / "labels.json").write_text('{"production": 1}\n')
    (spec / "instruction.md").write_text("Be concise.\n")
    return root / "specs"


def speclearn_command() -> str | None:
    """The ``speclearn`` console script next to this interpreter, else on PATH."""
    here = Path(sys.executable).parent / "speclearn"
    if here.exists():
        return str(here)
    return shutil.which("speclearn")


def gateway_env(mock_port: int) -> dict[str, str]:
    """What a platform team switches on, for `--gateway`: redaction before storage, two routes (the
    benchmark's model with a fallback upstream, and a second model), retries armed. The mock never
    fails, so this measures what the happy path pays for them."""
    upstream = {"url": f"http://127.0.0.1:{mock_port}/v1", "model": "bench"}
    routes = {
        "bench": {"spec": "default", "upstreams": [upstream, upstream]},
        "bench-b": {"spec": "default", "upstreams": [upstream]},
    }
    return {
        "SPECLEARN_LEDGER_CONTENT": "redacted",
        "SPECLEARN_ROUTES": json.dumps(routes),
        "SPECLEARN_UPSTREAM_RETRIES": "2",
    }


def start_speclearn(
    work: Path,
    log_dir: Path,
    mock_port: int,
    workers: int,
    cpus: set[int] | None,
    health_timeout: float = 60,
    gateway: bool = False,
) -> Target:
    exe = speclearn_command()
    if exe is None:
        raise RuntimeError("the `speclearn` console script is not installed (pip install -e .)")
    specs = write_spec_dir(work / "speclearn")
    data = work / "speclearn" / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = procs.free_port()
    env = {
        **os.environ,
        "SPECLEARN_UPSTREAM_URL": f"http://127.0.0.1:{mock_port}/v1",
        "SPECLEARN_SPECS_DIR": str(specs),
        "SPECLEARN_DATA_DIR": str(data),
        **(gateway_env(mock_port) if gateway else {}),
    }
    cmd = [exe, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    proc = procs.start("speclearn", cmd, log_dir, env=env, cpus=cpus, cwd=work)
    procs.wait_http_ok(proc, f"http://127.0.0.1:{port}/healthz", health_timeout)
    return Target("speclearn", f"http://127.0.0.1:{port}/v1", "bench", proc)


# LiteLLM's [proxy] extra brings uvicorn without httptools, so uvicorn falls back to the pure-Python
# h11 parser; speclearn runs on httptools (uvicorn[standard]). Same HTTP parser for both = fair.
LITELLM_EXTRAS = ("httptools",)


def ensure_litellm_venv(requirement: str = LITELLM_REQUIREMENT) -> Path:
    """Create ``bench/.venv-litellm`` and install LiteLLM's proxy (+ httptools) into it, once."""
    exe = LITELLM_VENV / "bin" / "litellm"
    py = LITELLM_VENV / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if not exe.exists():
        print(f"[bench] creating {LITELLM_VENV} with {requirement} (one-off, a minute or two)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True)
        subprocess.run([*pip, requirement, *LITELLM_EXTRAS], check=True)
        if not exe.exists():
            raise RuntimeError(f"{requirement} installed no `litellm` script in {LITELLM_VENV}")
    elif subprocess.run([str(py), "-c", "import httptools"], capture_output=True).returncode != 0:
        subprocess.run([*pip, *LITELLM_EXTRAS], check=True)  # venvs made before this extra
    return exe


def litellm_config(mock_port: int) -> str:
    """Pass-through to the mock with everything optional off: no DB, no callbacks, no spend logs.

    These are the settings LiteLLM's own production guide lists for speed (no ``set_verbose``,
    ``disable_spend_logs``, ``disable_error_logs``); without ``DATABASE_URL`` or a master key the
    proxy runs without Postgres and without key checks, which is the cheapest mode it has (1.108
    refuses to start keyless unless told to, hence the ``dangerously_...`` switch).
    """
    return (
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/bench\n"
        f"      api_base: http://127.0.0.1:{mock_port}/v1\n"
        "      api_key: x\n"
        "litellm_settings:\n"
        "  set_verbose: false\n"
        "  json_logs: false\n"
        "  turn_off_message_logging: true\n"
        "  request_timeout: 600\n"
        "general_settings:\n"
        "  disable_spend_logs: true\n"
        "  disable_error_logs: true\n"
        # speclearn has no auth either; a master key without a DB would add a per-request check.
        "  dangerously_permit_weak_or_unset_master_key: true\n"
    )


def start_litellm(
    work: Path,
    log_dir: Path,
    mock_port: int,
    workers: int,
    cpus: set[int] | None,
    requirement: str = LITELLM_REQUIREMENT,
    health_timeout: float = 180,
) -> Target:
    exe = ensure_litellm_venv(requirement)
    wdir = work / "litellm"
    wdir.mkdir(parents=True, exist_ok=True)
    cfg = wdir / "config.yaml"
    cfg.write_text(litellm_config(mock_port))
    port = procs.free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LITELLM_MASTER_KEY", "VIRTUAL_ENV")}
    env.update(
        {
            "LITELLM_LOG": "ERROR",  # also lowers uvicorn's log level: no access log on the hot path
            "LITELLM_MODE": "PRODUCTION",  # do not load a .env file
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map at start (offline)
            "PATH": f"{LITELLM_VENV / 'bin'}:{env.get('PATH', '')}",
        }
    )
    cmd = [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--num_workers", str(workers)]
    proc = procs.start("litellm", cmd, log_dir, env=env, cpus=cpus, cwd=wdir)
    procs.wait_http_ok(proc, f"http://127.0.0.1:{port}/health/liveliness", health_timeout)
    return Target("litellm", f"http://127.0.0.1:{port}/v1", "bench", proc)
