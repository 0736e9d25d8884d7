"""GET /openapi.json describes our own endpoints; schemathesis fuzzes them in process (ASGI):
no 5xx, and every error in the OpenAI error shape."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from starlette.testclient import TestClient

from console_fixtures import ADMIN_KEY, publish_versions
from console_fixtures import settings as proxy_settings
from proxy.app import create_app

# Module level, since schemathesis parametrizes at collection (its lazy fixture loader fails on
# this pytest); the folder is a throw-away one, like pytest's own.
_tmp = Path(tempfile.mkdtemp(prefix="speclearn-openapi-"))
publish_versions(_tmp / "specs")
# feedback waits for unknown inference ids; no need to wait long here
APP = create_app(
    proxy_settings(_tmp, feedback_keys=["pk-fuzz"], cors_origins=["https://app.example"], feedback_wait_seconds=0.01)
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(
    tag="openai"
)  # the OpenAI routes need an upstream


def test_the_document_covers_our_endpoints_and_refers_to_openai() -> None:
    with TestClient(APP) as c:
        doc = c.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    for path in ("/v1/feedback", "/healthz", "/readyz", "/metrics", "/admin/specs", "/admin/specs/{name}/labels/{label}",
                 "/console/login", "/console/specs/{name}/promote", "/console/specs/{name}/rollback",
                 "/admin/specs/{name}/versions/{version}/approve", "/console/specs/{name}/versions/{version}/approve",
                 "/console/specs/{name}/versions/{version}/reject"):  # fmt: skip
        assert path in doc["paths"], path
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert chat["externalDocs"]["url"].startswith("https://platform.openai.com/docs/api-reference")
    assert "messages" not in str(chat.get("requestBody"))  # by reference, not a copy of OpenAI's schema
    error = doc["components"]["schemas"]["Error"]["properties"]["error"]
    assert set(error["required"]) == {"message", "type", "code"}
    assert doc["paths"]["/v1/feedback"]["post"]["responses"]["429"]["$ref"].endswith("E429")


def _headers(path: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"} if path.startswith("/admin") else {}


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_our_endpoints(case: schemathesis.Case) -> None:
    response = case.call(headers=_headers(case.path))
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
    )
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), dict), response.text[:300]
        assert {"message", "type", "code"} <= set(body["error"]), response.text[:300]
        assert isinstance(body["error"]["message"], str) and isinstance(body["error"]["type"], str)
    case.validate_response(response, checks=[schemathesis.checks.response_schema_conformance])
