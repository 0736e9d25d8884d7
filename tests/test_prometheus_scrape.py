"""A real Prometheus scrapes a real proxy and compiler sidecar: the metrics, the alert rules and
the dashboard work end to end, not just on paper.

Debian's `prometheus` server (installed by scripts/ci-tools.sh) runs on loopback with a 1 s scrape
and rule interval, a temporary TSDB and the project's own alert rules. After some traffic through
the proxy (against the fake upstream) the test polls Prometheus' HTTP API, bounded in time, until
the request counter shows up with the contract's labels; then it checks that every alert and
recording rule evaluates without error and that every dashboard expression is accepted. The
proxy runs once with one worker and once with two (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from helpers import REPO, free_port, start_proxy, write_spec
from test_deploy import (
    METRICS,
    PROM_DIR,
    PROMTOOL_INSTALL,
    PROXY_METRICS,
    dashboard_exprs,
    grafana_to_promql,
    require_binary,
)

T = TypeVar("T")
POLL_SECONDS = 30.0


def poll(check: Callable[[], T | None], what: str, timeout: float = POLL_SECONDS) -> T:
    """Call `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, AssertionError) as exc:
            last_error = exc
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")


@contextmanager
def running_prometheus(tmp_path: Path, targets: dict[str, str]) -> Iterator[str]:
    """Prometheus scraping {job: host:port} every second with the project's rules loaded."""
    binary = require_binary("prometheus", PROMTOOL_INSTALL)
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROM_DIR / "alerts.yml", tmp_path / "alerts.yml")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                output = (tmp_path / "prometheus.log").read_text()
                pytest.fail(f"prometheus exited {proc.returncode}:\n{output}")
            return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200

        poll(ready, "prometheus to start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    """Instant query; an error status (bad PromQL, failed evaluation) fails the assertion."""
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert body["status"] == "success", f"{promql}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "multiprocess"])
def test_prometheus_scrapes_proxy_metrics(tmp_path: Path, fake_upstream: Any, workers: int) -> None:
    """Two workers put prometheus-client in multiprocess mode: the scrape must still aggregate."""
    proxy = start_proxy(tmp_path / "proxy", fake_upstream.url, workers=workers)
    try:
        with httpx.Client(timeout=10) as client:
            for i in range(3):
                response = client.post(
                    f"{proxy.base_url}/chat/completions",
                    json={"model": "gpt-test", "messages": [{"role": "user", "content": f"hi {i}"}]},
                )
                assert response.status_code == 200, response.text
                thumb = client.post(
                    f"{proxy.base_url}/feedback",
                    json={"inference_id": response.headers["x-inference-id"], "value": "up"},
                )
                assert thumb.status_code == 200, thumb.text
            exposition = client.get(f"{proxy.root_url}/metrics").text

        # Every proxy metric of the contract is registered under its contract name. (Multiprocess
        # mode only lists metrics some worker has touched, so check the single-process exposition.)
        declared = {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE ")}
        if workers == 1:
            assert PROXY_METRICS <= declared, f"missing from /metrics: {sorted(PROXY_METRICS - declared)}"
        else:
            assert {"speclearn_requests_total", "speclearn_feedback_total"} <= declared, declared

        target = httpx.URL(proxy.root_url)
        with running_prometheus(tmp_path / "prom", {"speclearn-proxy": f"{target.host}:{target.port}"}) as prometheus:

            def chat_counter() -> list[dict[str, Any]]:
                series = query(prometheus, 'speclearn_requests_total{route="chat", status="200"}')
                return [s for s in series if float(s["value"][1]) >= 3]

            series = poll(chat_counter, "speclearn_requests_total{route=chat} >= 3 in Prometheus")
            labels = series[0]["metric"]
            assert labels["job"] == "speclearn-proxy"
            assert {"route", "spec", "version", "status"} <= labels.keys(), labels

            # The thumbs-drop alert joins feedback's `version` label to the production gauge's
            # value: both must name the default spec's production version the same way.
            joined = query(
                prometheus,
                'speclearn_feedback_total{kind="thumb", value="up"} and on (spec, version) '
                'count_values by (spec) ("version", max by (spec) '
                '(speclearn_spec_active_version{label="production"}))',
            )
            assert [s["metric"]["spec"] for s in joined] == ["default"], joined

            up = query(prometheus, 'up{job="speclearn-proxy"}')
            assert [float(s["value"][1]) for s in up] == [1.0]

            # Every dashboard expression runs against real data without a query error.
            for expr in dashboard_exprs():
                if not expr.startswith("label_values("):
                    query(prometheus, grafana_to_promql(expr))

            # Every alert and recording rule has been evaluated, and none failed (e.g. a
            # many-to-many join that only real label sets reveal).
            def rules_evaluated() -> list[dict[str, Any]]:
                body = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()
                rules = [r for g in body["data"]["groups"] for r in g["rules"]]
                pending = [r for r in rules if r.get("lastEvaluation", "").startswith("0001-")]
                return [] if pending or not rules else rules

            rules = poll(rules_evaluated, "every rule to be evaluated once")
            broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
            assert not broken, broken
    finally:
        proxy.stop()


def test_prometheus_scrapes_compiler_metrics(tmp_path: Path, fake_upstream: Any) -> None:
    """The sidecar's own metrics port (`speclearn compiler --metrics-port`) serves the compiler part of
    the contract, and the `speclearn-compiler` job the *Down alert selects on sees it up."""
    specs_dir, port = tmp_path / "specs", free_port()
    write_spec(specs_dir, "default", "DEFAULT SPEC")
    env = {
        **os.environ,
        "SPECLEARN_UPSTREAM_URL": fake_upstream.url,
        "SPECLEARN_SPECS_DIR": str(specs_dir),
        "SPECLEARN_DATA_DIR": str(tmp_path / "data"),
    }
    log_path = tmp_path / "compiler.log"
    with log_path.open("wb") as log:
        compiler = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "compiler", "--metrics-port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def exposition() -> str:
            if compiler.poll() is not None:
                pytest.fail(f"compiler exited {compiler.returncode}:\n{log_path.read_text()}")
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text

        text = poll(exposition, "the compiler's metrics port")
        declared = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
        wanted = set(METRICS) - PROXY_METRICS
        assert wanted <= declared, f"missing from the compiler's /metrics: {sorted(wanted - declared)}"

        with running_prometheus(tmp_path / "prom", {"speclearn-compiler": f"127.0.0.1:{port}"}) as prometheus:

            def compiler_up() -> list[dict[str, Any]]:
                return [s for s in query(prometheus, 'up{job="speclearn-compiler"}') if s["value"][1] == "1"]

            poll(compiler_up, 'up{job="speclearn-compiler"} == 1')
    finally:
        compiler.terminate()
        try:
            compiler.wait(timeout=15)
        except subprocess.TimeoutExpired:
            compiler.kill()
            compiler.wait()
