"""Deployment artefacts stay valid and agree with the code's contracts.

Checked here: the Dockerfile (structure + hadolint), .dockerignore, the compose stack, the
Prometheus config and alert rules (promtool check + unit tests), the Grafana provisioning and
dashboard, and the Kubernetes manifests (schema-validated offline with kubernetes-validate).

Every PromQL expression (alerts and dashboard) is checked against METRICS, the metrics contract
of the proxy and compiler: a renamed metric, label or label value breaks this test rather than
silently flat-lining a panel or an alert.

External checkers are required under CI=true: a missing tool fails instead of skipping, so a green
CI run means the check really ran. Locally a missing tool skips and names its installer.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest
import yaml

from compiler.tuning import METRICS_PORT

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROM_DIR = DEPLOY / "prometheus"
GRAFANA_DIR = DEPLOY / "grafana"
K8S_DIR = DEPLOY / "k8s"
DASHBOARD = GRAFANA_DIR / "dashboards" / "speclearn.json"

# --- the metrics contract (proxy + compiler) ------------------------------------------------------

ROUTES = {"chat", "responses", "completions", "embeddings", "models", "passthrough", "feedback"}

#: metric name -> label names it carries. Histograms are listed by base name.
METRICS: dict[str, set[str]] = {
    "speclearn_requests_total": {"route", "spec", "version", "status"},
    "speclearn_request_duration_seconds": {"route", "spec", "version"},
    "speclearn_upstream_duration_seconds": {"route"},
    "speclearn_overhead_seconds": {"route"},
    "speclearn_ttft_seconds": {"route", "spec", "version"},
    "speclearn_tokens_total": {"direction", "spec", "version", "model"},
    "speclearn_upstream_errors_total": {"route", "kind"},
    "speclearn_feedback_total": {"spec", "version", "kind", "value"},
    "speclearn_ledger_queue_depth": set(),
    "speclearn_ledger_dropped_total": set(),
    "speclearn_ledger_written_total": set(),
    "speclearn_registry_reloads_total": set(),
    "speclearn_spec_active_version": {"spec", "label"},
    "speclearn_spec_tokens": {"spec", "version"},
    "speclearn_compiler_rounds_total": {"spec", "result"},
    "speclearn_compiler_round_duration_seconds": {"spec"},
    "speclearn_compiler_llm_calls_total": {"spec"},
    "speclearn_compiler_tokens_total": {"spec"},
    "speclearn_compiler_publishes_total": {"spec", "label"},
    "speclearn_experiment_decisions_total": {"spec", "decision"},
    "speclearn_experiment_p_value": {"spec"},
    "speclearn_experiment_lift": {"spec"},
}
PROXY_METRICS = {name for name in METRICS if not name.startswith(("speclearn_compiler_", "speclearn_experiment_"))}
HISTOGRAMS = {
    "speclearn_request_duration_seconds",
    "speclearn_upstream_duration_seconds",
    "speclearn_overhead_seconds",
    "speclearn_ttft_seconds",
    "speclearn_compiler_round_duration_seconds",
}
#: (metric, label) -> the closed set of values it may take.
LABEL_VALUES: dict[tuple[str, str], set[str]] = {
    ("speclearn_requests_total", "route"): ROUTES,
    ("speclearn_request_duration_seconds", "route"): ROUTES,
    ("speclearn_upstream_duration_seconds", "route"): ROUTES,
    ("speclearn_overhead_seconds", "route"): ROUTES,
    ("speclearn_ttft_seconds", "route"): ROUTES,
    ("speclearn_upstream_errors_total", "route"): ROUTES,
    ("speclearn_upstream_errors_total", "kind"): {
        "timeout",
        "connect",
        "reset",
        "status_5xx",
        "status_4xx",
        "broken_stream",
    },
    ("speclearn_tokens_total", "direction"): {"in", "out"},
    ("speclearn_feedback_total", "kind"): {"thumb", "score", "pair"},
    ("speclearn_feedback_total", "value"): {"up", "down", "score", "pair"},
    ("speclearn_compiler_rounds_total", "result"): {"published", "gate_failed", "error", "skipped"},
    ("speclearn_experiment_decisions_total", "decision"): {"promote", "rollback", "continue"},
}
#: Labels Prometheus itself attaches to every scraped series.
TARGET_LABELS = {"instance", "job"}

# --- tool discovery -------------------------------------------------------------------------------


def _missing(what: str, install: str) -> NoReturn:
    """Fail under CI (a skipped check must not look green), skip locally."""
    message = f"{what} not available; install with: {install}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_binary(name: str, install: str) -> str:
    """Path of an executable on PATH or beside this interpreter (an un-activated venv)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        _missing(f"`{name}`", install)
    return found


def require_module(name: str, install: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"Python module `{name}`", install)


PROMTOOL_INSTALL = "bash scripts/ci-tools.sh"
PY_TOOLS_INSTALL = "pip install -e '.[deploy-check]'"


def run(cmd: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a checker; on failure the assertion shows its whole output."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


# --- PromQL inspection ----------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_METRIC = re.compile(r"(?<![\w:])(speclearn[_:][\w:]*)")
_SELECTOR = re.compile(r"(?<![\w:])(speclearn_\w+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def base_metric(name: str) -> str:
    """`x_bucket`/`x_sum`/`x_count` of a contract histogram -> `x`; other names unchanged."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return name


def recording_rule_names() -> set[str]:
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def contract_problems(expr: str, recorded: set[str]) -> list[str]:
    """Everything in one PromQL expression that the metrics contract does not provide."""
    problems: list[str] = []
    bare = _STRING.sub('""', expr)
    for name in _METRIC.findall(bare):
        if name not in recorded and base_metric(name) not in METRICS:
            problems.append(f"unknown metric {name}")
    for name, body in _SELECTOR.findall(expr):
        base = base_metric(name)
        if base not in METRICS:
            continue
        allowed = METRICS[base] | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
        for label, op, value in _MATCHER.findall(body):
            if label not in allowed:
                problems.append(f"{name} has no label {label!r}")
                continue
            domain = LABEL_VALUES.get((base, label))
            if domain and re.fullmatch(r"[\w|]+", value):
                unknown = set(value.split("|")) - domain
                if unknown:
                    problems.append(f"{name}{{{label}{op}...}}: unknown value(s) {sorted(unknown)}")
    every_label = set().union(*METRICS.values()) | TARGET_LABELS | {"le"}
    for group in _GROUPING.findall(bare):
        for label in filter(None, (part.strip() for part in group.split(","))):
            if label not in every_label:
                problems.append(f"grouping by unknown label {label!r}")
    return problems


def grafana_to_promql(expr: str) -> str:
    """Substitute the dashboard's Grafana variables so the expression is plain PromQL."""
    return expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$spec", ".*")


def dashboard_exprs() -> list[str]:
    """Every PromQL string in the dashboard: panel targets, variables and annotations."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()))
    return found


# --- Dockerfile -----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instr, args in dockerfile_instructions():
        if instr == "FROM":
            result.append([])
        if result:
            result[-1].append((instr, args))
    return result


def test_dockerfile_is_multi_stage_on_python_slim() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2, "builder + runtime stages expected"
    header_args = dict(a.split("=", 1) for i, a in dockerfile_instructions() if i == "ARG" and "=" in a)
    runtime_from = all_stages[-1][0][1].split()[0]
    image = re.sub(r"\$\{(\w+)\}", lambda m: header_args.get(m.group(1), ""), runtime_from)
    assert image.startswith("python:3.11-slim"), image
    froms = [s[0][1] for s in all_stages]
    assert re.search(r"\bAS\s+builder\b", froms[0], re.I), froms
    runtime = all_stages[-1]
    assert any("from=builder" in a for i, a in runtime if i in ("COPY", "RUN")), (
        "runtime must take the builder's wheels"
    )


def test_dockerfile_runtime_stage_essentials() -> None:
    last = dict(stages()[-1])  # Docker uses the last USER/CMD/HEALTHCHECK/ENTRYPOINT of a stage
    args = dict(a.split("=", 1) for i, a in stages()[-1] if i == "ARG" and "=" in a)
    user = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), last.get("USER", ""))
    assert user and user.split(":")[0] not in ("root", "0"), f"runtime must not run as root: {user!r}"
    health = last.get("HEALTHCHECK", "")
    assert "/healthz" in health and "urllib" in health and "curl" not in health, health
    assert json.loads(last["ENTRYPOINT"]) == ["speclearn"]
    cmd = json.loads(last["CMD"])  # exec form, so signals reach the server
    assert cmd[:1] == ["serve"] and "8080" in cmd and "0.0.0.0" in cmd, cmd
    assert "8080" in last["EXPOSE"].split()
    assert "/data" in last["VOLUME"]


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per .dockerignore line, in Docker's pattern syntax."""
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(glob):
            if glob.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif glob.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif glob[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif glob[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif glob[i] == "[":
                end = glob.index("]", i)
                regex, i = regex + glob[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(glob[i]), i + 1
        patterns.append((negated, re.compile(regex)))
    return patterns


def dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, pattern in _dockerignore_patterns():
        if any(pattern.fullmatch(c) for c in candidates):
            excluded = not negated
    return excluded


def test_dockerfile_copy_sources_survive_dockerignore() -> None:
    """A COPY of something .dockerignore drops (or that does not exist) fails `docker build`."""
    sources: list[str] = []
    for instr, args in dockerfile_instructions():
        if instr in ("COPY", "ADD"):
            words = [w for w in args.split() if not w.startswith("--")]
            if any(w.startswith("--from") for w in args.split()):
                continue
            sources += words[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY source {source} missing from the repo"
        assert not dockerignored(source.rstrip("/")), f"{source} is excluded by .dockerignore"
        if (ROOT / source).is_dir():
            for file in (ROOT / source).rglob("*.py"):
                rel = file.relative_to(ROOT).as_posix()
                if "__pycache__" not in rel:
                    assert not dockerignored(rel), rel


def test_builder_stage_context_builds_a_complete_wheel(tmp_path: Path) -> None:
    """Replay the builder stage without a Docker engine: copy what its COPYs copy (minus
    .dockerignore), build the wheel as `pip wheel` would there, and check no module is lost
    (a sub-package without __init__.py, say) and the console script exists."""
    for instr, args in stages()[0]:
        if instr != "COPY":
            continue
        *sources, _dest = [w for w in args.split() if not w.startswith("--")]
        for source in sources:
            src = ROOT / source
            files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
            for file in files:
                rel = file.relative_to(ROOT).as_posix()
                if not dockerignored(rel):
                    (tmp_path / "ctx" / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(file, tmp_path / "ctx" / rel)
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheels"), str(tmp_path / "ctx")]
    )
    (wheel,) = (tmp_path / "wheels").glob("speclearn-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "speclearn = proxy.cli:main" in archive.read(entry_points).decode()
    modules = {
        p.relative_to(ROOT).as_posix()
        for package in ("proxy", "compiler")
        for p in (ROOT / package).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert not modules - names, f"left out of the wheel: {sorted(modules - names)}"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/config",
        "data/ledger.sqlite",
        "tests/test_deploy.py",
        "proxy/__pycache__/app.cpython-311.pyc",
        "bench/results/run.json",
        ".env",
    ],
)
def test_dockerignore_keeps_local_state_out(path: str) -> None:
    assert dockerignored(path), f"{path} would be sent to the Docker daemon"


def test_hadolint() -> None:
    hadolint = require_binary("hadolint", PY_TOOLS_INSTALL)
    run([hadolint, "--no-color", "Dockerfile"])


# --- docker compose -------------------------------------------------------------------------------


def compose_text() -> str:
    """The compose file with ${VAR:-default} interpolated as with an empty environment."""
    text = (DEPLOY / "docker-compose.yml").read_text()
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """Parsed by the compose-spec implementation (strict keys), then as a plain dict."""
    compose_spec = require_module("compose_spec", PY_TOOLS_INSTALL)
    try:
        parsed = compose_spec.PyOptions(apply_merge=True).from_yaml(compose_text())
        parsed.validate()
    except ValueError as exc:
        pytest.fail(f"deploy/docker-compose.yml is not a valid compose file: {exc}")
    data: dict[str, Any] = parsed.to_dict()
    return data


def test_compose_services_and_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"proxy", "compiler", "postgres", "prometheus", "grafana"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert services["proxy"]["command"][0] == "serve"
    assert services["compiler"]["command"] == ["compiler"]
    assert "/readyz" in " ".join(services["proxy"]["healthcheck"]["test"])
    for name in ("proxy", "compiler"):
        service = services[name]
        context = (DEPLOY / service["build"]["context"]).resolve()
        assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file()
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "@postgres:5432/" in service["environment"]["SPECLEARN_DATABASE_URL"]
    assert f":{METRICS_PORT}/" in " ".join(services["compiler"]["healthcheck"]["test"])  # the default port


def test_compose_mounts_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume if isinstance(volume, str) else volume["source"]
            source = source.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: bind source {source} missing"
            else:
                assert source in declared, f"{name}: volume {source} not declared"


def test_compose_wires_prometheus_and_grafana(compose: dict[str, Any]) -> None:
    prom_mounts = " ".join(compose["services"]["prometheus"]["volumes"])
    assert "./prometheus/prometheus.yml:" in prom_mounts and "./prometheus/alerts.yml:" in prom_mounts
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/speclearn.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    grafana_mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.startswith("./grafana/dashboards:" + path) for m in grafana_mounts), grafana_mounts
    scrape = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert {"proxy:8080", "compiler:9101"} <= targets


# --- Prometheus -----------------------------------------------------------------------------------


def test_promtool_check_config_and_rules() -> None:
    promtool = require_binary("promtool", PROMTOOL_INSTALL)
    run([promtool, "check", "config", "prometheus.yml"], cwd=PROM_DIR)
    run([promtool, "check", "rules", "alerts.yml"], cwd=PROM_DIR)


def test_promtool_alert_unit_tests() -> None:
    promtool = require_binary("promtool", PROMTOOL_INSTALL)
    run([promtool, "test", "rules", "alerts_test.yml"], cwd=PROM_DIR)


def test_required_alerts_exist() -> None:
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {
        "SpeclearnHighErrorRate",
        "SpeclearnOverheadP99High",
        "SpeclearnFeedbackStopped",
        "SpeclearnLedgerDropping",
        "SpeclearnCompilerFailing",
        "SpeclearnThumbsUpDropAfterPublish",
        "SpeclearnExperimentRolledBack",
    } <= alerts


def test_alert_exprs_match_metrics_contract() -> None:
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    recorded = recording_rule_names()
    problems = {
        r.get("alert") or r["record"]: p
        for g in rules["groups"]
        for r in g["rules"]
        if (p := contract_problems(r["expr"], recorded))
    }
    assert not problems, problems


# --- Grafana --------------------------------------------------------------------------------------


def test_grafana_datasource_matches_dashboard() -> None:
    ds = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in ds["datasources"]}
    text = DASHBOARD.read_text()
    used = set(re.findall(r'"type":\s*"prometheus",\s*"uid":\s*"([^"]+)"', text))
    assert used and used <= uids, (used, uids)


def test_dashboard_panels_are_well_formed() -> None:
    """Grafana silently drops or merges panels with clashing ids or overlapping positions."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
        if panel["type"] != "row":
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_dashboard_exprs_match_metrics_contract() -> None:
    exprs = dashboard_exprs()
    recorded = recording_rule_names()
    problems = {e: p for e in exprs if (p := contract_problems(e, recorded))}
    assert not problems, problems
    used = {base_metric(m) for e in exprs for m in _METRIC.findall(_STRING.sub('""', e))}
    must_show = {
        "speclearn_requests_total",
        "speclearn_upstream_errors_total",
        "speclearn_overhead_seconds",
        "speclearn_ttft_seconds",
        "speclearn_tokens_total",
        "speclearn_feedback_total",
        "speclearn_compiler_rounds_total",
        "speclearn_compiler_publishes_total",
    }
    assert must_show <= used, f"dashboard lacks {sorted(must_show - used)}"


def test_dashboard_exprs_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each expression as a recording rule (no query server needed)."""
    promtool = require_binary("promtool", PROMTOOL_INSTALL)
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": grafana_to_promql(e)}
        for i, e in enumerate(dashboard_exprs())
        if not e.startswith("label_values(")
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run([promtool, "check", "rules", str(path)])


# --- Kubernetes -----------------------------------------------------------------------------------

K8S_VERSIONS = ("1.28.0", "1.37.0")  # oldest still common on managed clusters .. newest schema


def k8s_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S_DIR / resource).read_text()):
            if doc:
                yield resource, doc


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    for _, doc in k8s_documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind}/{name} in deploy/k8s")


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_validate_against_schema(version: str) -> None:
    kv = require_module("kubernetes_validate", PY_TOOLS_INSTALL)
    errors = []
    for resource, doc in k8s_documents():
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            errors.append(f"{resource}: {exc.message}")
    assert not errors, errors


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_k8s_proxy_deployment() -> None:
    deploy = k8s_object("Deployment", "speclearn-proxy")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    c = _container(deploy)
    assert c["args"][0] == "serve"
    # a replica that still answers while the ledger's database is down stays in service
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz?exclude=database&exclude=ledger_queue"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= c["resources"]["requests"].keys()
    assert "memory" in c["resources"]["limits"]
    assert deploy["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    annotations = deploy["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["http"] == 8080

    service = k8s_object("Service", "speclearn-proxy")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    hpa = k8s_object("HorizontalPodAutoscaler", "speclearn-proxy")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "speclearn-proxy"}
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = k8s_object("PodDisruptionBudget", "speclearn-proxy")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_k8s_compiler_is_a_single_recreated_replica() -> None:
    deploy = k8s_object("Deployment", "speclearn-compiler")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"]["type"] == "Recreate"
    c = _container(deploy)
    assert c["args"] == ["compiler"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == METRICS_PORT  # `speclearn compiler`'s default port


def test_k8s_settings_come_from_configmap_and_secret() -> None:
    known = setting_names()
    config = k8s_object("ConfigMap", "speclearn-config")["data"]
    secret = k8s_object("Secret", "speclearn-secrets")["stringData"]
    assert set(config) | set(secret) <= known
    assert {"SPECLEARN_UPSTREAM_API_KEY", "SPECLEARN_API_KEYS", "SPECLEARN_ADMIN_KEY", "SPECLEARN_DATABASE_URL"} <= set(
        secret
    ), "keys belong in the Secret"
    assert not set(config) & set(secret)
    for name in ("speclearn-proxy", "speclearn-compiler"):
        refs = _container(k8s_object("Deployment", name))["envFrom"]
        assert {"configMapRef": {"name": "speclearn-config"}} in refs
        assert {"secretRef": {"name": "speclearn-secrets"}} in refs


def test_k8s_images_are_set_by_kustomize() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    names = {i["name"] for i in kustomization["images"]}
    for name in ("speclearn-proxy", "speclearn-compiler"):
        assert _container(k8s_object("Deployment", name))["image"] in names


# --- the settings the configs give: real ones, a compiler that needs no model, no open proxy --------


def setting_names() -> set[str]:
    """Every environment variable the proxy and the compiler read (a typo in a config is no setting)."""
    from compiler.settings import NAMESPACE as COMPILER
    from proxy.settings import NAMESPACE as PROXY

    return {ns.env_name(name) for ns in (PROXY, COMPILER) for name in ns.public} | {"SPECLEARN_CONFIG"}


def compose_env(service: str, **given: str) -> dict[str, str]:
    """A compose service's environment as `docker compose` gives it with `given` set in the shell."""
    text = (DEPLOY / "docker-compose.yml").read_text()
    text = re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: given.get(m.group(1), m.group(2) or ""), text)
    data = yaml.safe_load(text)
    env = dict(data["x-speclearn"]["environment"])
    env.update(data["services"][service].get("environment") or {})
    env.pop("<<", None)
    return {k: "" if v is None else str(v) for k, v in env.items()}  # compose interpolates a value, not YAML


def k8s_env() -> dict[str, str]:
    return {
        **k8s_object("ConfigMap", "speclearn-config")["data"],
        **k8s_object("Secret", "speclearn-secrets")["stringData"],
    }


def test_deploy_configs_set_only_real_settings() -> None:
    known = setting_names()
    for where, env in [("compose proxy", compose_env("proxy")), ("compose compiler", compose_env("compiler")),
                       ("k8s", k8s_env())]:  # fmt: skip
        assert set(env) <= known, f"{where}: {sorted(set(env) - known)} are not settings"


def test_deploy_configs_compile_with_no_compiler_model() -> None:
    """The compiler takes the model the spec's traffic used (compiler/served_model.py): a
    config that named one would be wrong the day the app moves to another model. Embeddings are
    asked of an embedding model, never the chat model (compiler/embed.py)."""
    for env in (compose_env("compiler"), k8s_env()):
        assert "SPECLEARN_COMPILER_MODEL" not in env and "SPECLEARN_COMPILER_BASE_URL" not in env
        assert env["SPECLEARN_UPSTREAM_URL"] == "https://api.openai.com/v1"
        assert env["SPECLEARN_COMPILER_EMBEDDING_MODEL"] == "text-embedding-3-small"
    assert compose_env("compiler")["SPECLEARN_UPSTREAM_API_KEY"] == ""  # the shell gives it, never the file
    assert compose_env("compiler", SPECLEARN_UPSTREAM_API_KEY="sk-t")["SPECLEARN_UPSTREAM_API_KEY"] == "sk-t"


def serve(env: dict[str, str], host: str = "0.0.0.0") -> subprocess.CompletedProcess[str]:
    """`speclearn serve` as the config starts it: a refusal exits at once, a start answers
    /healthz (then it is stopped; returncode None)."""
    import time

    import httpx

    base = {k: v for k, v in os.environ.items() if not k.startswith("SPECLEARN_")}
    port = _free_port()
    cmd = [sys.executable, "-m", "proxy.cli", "serve", "--host", host, "--port", str(port)]
    proc = subprocess.Popen(
        cmd, env={**base, **env}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for _ in range(600):
            if proc.poll() is not None:
                out, err = proc.communicate()
                return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return subprocess.CompletedProcess(cmd, None, "", "")  # type: ignore[arg-type]
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("speclearn serve neither refused nor started")
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


REFUSAL = "error: refusing to serve on 0.0.0.0 an open proxy that spends SPECLEARN_UPSTREAM_API_KEY"


def test_compose_without_client_keys_refuses_to_start_an_open_proxy() -> None:
    env = compose_env("proxy", SPECLEARN_UPSTREAM_API_KEY="sk-team")
    assert env["SPECLEARN_API_KEYS"] == ""
    done = serve(env)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        REFUSAL
        + ": set SPECLEARN_API_KEYS (the keys your clients send), or SPECLEARN_ALLOW_OPEN_PROXY=1 if that is meant"
    ], done.stderr


def test_k8s_without_client_keys_refuses_to_start_an_open_proxy() -> None:
    env = k8s_env()
    assert env["SPECLEARN_API_KEYS"], "the Secret must carry client keys"
    env["SPECLEARN_API_KEYS"] = ""  # a Secret written without them
    done = serve(env)
    assert done.returncode == 2 and done.stderr.startswith(REFUSAL), done.stderr


def test_the_refusal_is_only_for_an_open_proxy_with_the_teams_key() -> None:
    from pydantic import SecretStr

    from proxy.settings import Settings

    key = SecretStr("sk-team")
    assert Settings(upstream_api_key=key).open_proxy_refusal("0.0.0.0") is not None
    assert Settings(upstream_api_key=key).open_proxy_refusal("::") is not None
    assert Settings(upstream_api_key=key, api_keys=["sk-client"]).open_proxy_refusal("0.0.0.0") is None
    assert Settings(upstream_api_key=key, allow_open_proxy=True).open_proxy_refusal("0.0.0.0") is None
    for loopback in ("127.0.0.1", "localhost", "::1", "[::1]"):
        assert Settings(upstream_api_key=key).open_proxy_refusal(loopback) is None
    assert Settings().open_proxy_refusal("0.0.0.0") is None  # no key of the team's: clients bring their own
    assert Settings(upstream_api_key=SecretStr("")).open_proxy_refusal("0.0.0.0") is None  # compose's empty default


def test_opting_in_to_an_open_proxy_starts_it() -> None:
    env = compose_env("proxy", SPECLEARN_UPSTREAM_API_KEY="sk-team", SPECLEARN_ALLOW_OPEN_PROXY="1")
    env.pop("SPECLEARN_DATABASE_URL")  # no PostgreSQL here: the SQLite ledger under a temp dir
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        env.update(SPECLEARN_DATA_DIR=tmp, SPECLEARN_SPECS_DIR=tmp)
        done = serve(env, host="0.0.0.0")
    assert done.returncode is None, done.stderr  # it serves
