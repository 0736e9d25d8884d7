"""`GET /openapi.json`: the proxy's own endpoints with their request and error shapes; the
OpenAI-compatible routes by reference (OpenAI's API reference is theirs to describe)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .bodies import ID_RE
from .registry.base import LABEL_RE, NAME_RE
from .responses import json_response

OPENAI_DOCS = "https://platform.openai.com/docs/api-reference"
ERROR_STATUSES = {
    "400": "Invalid request (bad JSON, a wrong field or value)",
    "401": "Missing or invalid key",
    "403": "The key may not do this (e.g. a publishable key), or the feature is off",
    "404": "Unknown spec, version or inference",
    "409": "Conflicts with what is stored",
    "413": "Body too large",
    "429": "Rate limited: see Retry-After",
    "503": "Storage unavailable: retry",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"$ref": f"#/components/responses/E{code}"} for code in codes}


NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "pattern": NAME_RE.pattern}}
VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
LABEL = {"name": "label", "in": "path", "required": True, "schema": {"type": "string", "pattern": LABEL_RE.pattern}}
ADMIN: list[dict[str, list[str]]] = [{"adminKey": []}]
CONSOLE: list[dict[str, list[str]]] = [{"consoleSession": []}]
CONSOLE_FORM_ERRORS = _errors("400", "401", "403", "404", "409", "413")
REDIRECT = {
    "303": {
        "description": "Done: a redirect to the page to show next",
        "headers": {"Location": {"schema": {"type": "string"}}},
    }
}
HOLD_ACTIONS = {
    "approve": "Approval mode: serve a held version, moving the label it asked for onto it",
    "reject": "Approval mode: never serve a held version",
}
HTML = {"description": "A console page", "content": {"text/html": {"schema": {"type": "string"}}}}
FEEDBACK_ID = {
    "name": "feedback_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": ID_RE.pattern},
}
USER_HEADER = {"name": "X-User-Id", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 256},
               "description": "the end user, when the body names none"}  # fmt: skip
PREFLIGHT: dict[str, Any] = {
    "tags": ["feedback"],
    "summary": "CORS preflight for browsers",
    "parameters": [
        {"name": "Origin", "in": "header", "required": False, "schema": {"type": "string"}},
        {"name": "Access-Control-Request-Method", "in": "header", "required": False, "schema": {"type": "string"}},
    ],
    "responses": {"204": {"description": "Allowed: the Access-Control-Allow-* headers"}, **_errors("403")},
}


def _form(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": schema}}}


def _openai(summary: str, page: str, method: str = "post") -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": ["openai"],
        "summary": summary,
        "description": (
            "OpenAI-compatible: the request and answer are OpenAI's, relayed to the upstream (the active spec "
            "injected where the proxy's README says). Routing headers: `X-Spec` (`NAME`, `NAME@LABEL`, `NAME@N`, "
            "`none`) and `X-Inference-Id`; every answer carries `X-Inference-Id`, `X-Spec-Version` and "
            "`X-Speclearn-Overhead-Ms`. Also under `/specs/{name}/v1/...`."
        ),
        "externalDocs": {"description": "OpenAI API reference", "url": f"{OPENAI_DOCS}/{page}"},
        "security": [{"clientKey": []}, {}],
        "responses": {"200": {"description": "The upstream's answer, relayed"}, **_errors("400", "401", "403", "404", "413"),
                      "502": {"$ref": "#/components/responses/E502"}, "504": {"$ref": "#/components/responses/E504"}},
    }  # fmt: skip
    if method == "post":
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    return op


def build() -> dict[str, Any]:
    ident = {"type": "string", "pattern": ID_RE.pattern}
    user = {"type": "string", "maxLength": 256}
    judge = {
        "user": {**user, "description": "the end user who judged (else `safety_identifier`, `X-User-Id`, or for a "
                 "publishable key a keyed hash of the client address): the compiler counts voices"},
        "safety_identifier": {**user, "description": "OpenAI's end-user id, read when `user` is absent"},
    }  # fmt: skip
    # the document is laid out by hand, an operation's keys grouped as they read
    # fmt: off
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": ["string", "null"]},
                    },
                }
            },
        },
        "Rating": {
            "type": "object",
            "additionalProperties": False,
            "required": ["inference_id", "value"],
            "properties": {
                "inference_id": ident,
                "value": {
                    "description": '"up"/"down", booleans and ±1 are thumbs; any other finite number is a score',
                    "oneOf": [{"type": "string", "enum": ["up", "down"]}, {"type": "boolean"}, {"type": "number"}],
                },
                "comment": {"type": "string", "maxLength": 8000},
                "tags": {"type": "object", "maxProperties": 32, "additionalProperties": {"type": "string", "maxLength": 256}},
                "feedback_id": {**ident, "description": "idempotency key: the same id twice is stored once; with a "
                                "publishable key at least 16 random characters"},
                **judge,
            },
        },
        "Pair": {
            "type": "object",
            "additionalProperties": False,
            "required": ["chosen_id", "rejected_id"],
            "properties": {
                "chosen_id": ident,
                "rejected_id": ident,
                "comment": {"type": "string", "maxLength": 8000},
                "tags": {"type": "object", "maxProperties": 32, "additionalProperties": {"type": "string", "maxLength": 256}},
                "feedback_id": ident,
                **judge,
            },
        },
        "FeedbackAck": {
            "type": "object",
            "required": ["feedback_id", "status"],
            "properties": {"feedback_id": {"type": "string"}, "status": {"type": "string", "enum": ["created", "duplicate"]}},
        },
        "FeedbackChange": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "value": {
                    "description": "the new value, of the same kind (a thumb stays a thumb, a score a score; a pair has none)",
                    "oneOf": [{"type": "string", "enum": ["up", "down"]}, {"type": "boolean"}, {"type": "number"}],
                },
                "comment": {"type": ["string", "null"], "maxLength": 8000, "description": "null erases it"},
            },
        },
        "FeedbackChangeAck": {
            "type": "object",
            "required": ["feedback_id", "status"],
            "properties": {"feedback_id": {"type": "string"}, "status": {"type": "string", "enum": ["updated", "unchanged"]}},
        },
        "FeedbackRetractAck": {
            "type": "object",
            "required": ["feedback_id", "status"],
            "properties": {"feedback_id": {"type": "string"}, "status": {"type": "string", "enum": ["retracted"]}},
        },
        "Spec": {
            "type": "object",
            "required": ["name", "labels", "versions"],
            "properties": {
                "name": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
                "versions": {"type": "array", "items": {"type": "integer"}},
                "latest": {"type": ["integer", "null"]},
                "instruction": {"type": ["string", "null"]},
            },
        },
        "SpecList": {"type": "object", "required": ["data"], "properties": {"data": {"type": "array", "items": _ref("Spec")}}},
        "PublishRequest": {
            "type": "object",
            "required": ["text"],
            "properties": {
                "text": {"type": "string", "minLength": 1},
                "labels": {
                    "type": ["array", "null"], "items": {"type": "string"},
                    "description": "labels to move onto the new version. Omitted or null: `production` when the "
                                   "spec has no production label yet (a person's first version), else none; "
                                   "`[]`: none, the version waits until a label is moved onto it",
                },
                "meta": {"type": "object", "description": "front matter to record (principles, gate, cost, ...)"},
            },
        },
        "Published": {
            "type": "object",
            "required": ["name", "version", "sha256", "labels"],
            "properties": {
                "name": {"type": "string"}, "version": {"type": "integer"}, "sha256": {"type": "string"},
                "labels": {"type": "array", "items": {"type": "string"}, "description": "the labels now on this version"},
            },
        },
        "Version": {
            "type": "object",
            "required": ["name", "version", "text", "meta"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "integer"},
                "text": {"type": "string"},
                "meta": {"type": "object"},
            },
        },
        "Hold": {
            "type": "object",
            "required": ["name", "version", "status", "label"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "integer"},
                "status": {"type": "string", "enum": ["held", "approved", "rejected"]},
                "label": {"type": ["string", "null"], "description": "the label the compiler asked for (moved on approval)"},
                "requested_at": {"type": ["string", "null"]},
                "decided_at": {"type": ["string", "null"]},
            },
        },
        "LabelRequest": {"type": "object", "required": ["version"], "properties": {"version": {"type": "integer", "minimum": 1}}},
        "Erased": {
            "type": "object",
            "required": ["user", "erased"],
            "properties": {
                "user": {"type": "string"},
                "erased": {"type": "object", "required": ["inferences", "feedback"],
                           "properties": {"inferences": {"type": "integer"}, "feedback": {"type": "integer"}}},
            },
        },
    }
    responses = {
        f"E{code}": _json(_ref("Error"), text)
        for code, text in {**ERROR_STATUSES, "502": "Upstream unreachable", "504": "Upstream timed out"}.items()
    }
    responses["E429"]["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "description": "seconds"}}
    feedback_body = {"required": True, "content": {"application/json": {"schema": {"oneOf": [_ref("Rating"), _ref("Pair")]}}}}
    paths: dict[str, Any] = {
        "/v1/feedback": {
            "post": {
                "tags": ["feedback"],
                "summary": "A thumb, a score or a pairwise judgment on logged inferences",
                "description": (
                    "Stored durably before the answer. Accepts a client key or a publishable feedback key "
                    "(rate-limited per key and per client address). Browsers may call it from the origins in "
                    "`SPECLEARN_CORS_ORIGINS`; any other `Origin` is refused."
                ),
                "security": [{"clientKey": []}, {"feedbackKey": []}, {}],
                "requestBody": feedback_body,
                "parameters": [USER_HEADER],
                "responses": {"200": _json(_ref("FeedbackAck"), "Stored (or already stored under this feedback_id)"),
                              **_errors("400", "401", "403", "404", "409", "413", "429", "503")},
            },
            "options": PREFLIGHT,
        },
        "/v1/feedback/{feedback_id}": {
            "put": {
                "tags": ["feedback"],
                "summary": "Change a judgment: its value and/or comment",
                "description": (
                    "In place and durably before the answer: the judgment is counted once, with its latest value. "
                    "A publishable key may change only feedback it created (else 404). 409 once retracted."
                ),
                "security": [{"clientKey": []}, {"feedbackKey": []}, {}],
                "parameters": [FEEDBACK_ID],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("FeedbackChange")}}},
                "responses": {"200": _json(_ref("FeedbackChangeAck"), "Changed (or already so)"),
                              **_errors("400", "401", "403", "404", "409", "413", "429", "503")},
            },
            "delete": {
                "tags": ["feedback"],
                "summary": "Retract a judgment",
                "description": (
                    "Durably: no compile round, tally or export counts it again, and its comment is erased. Retracting "
                    "twice answers the same. A publishable key may retract only feedback it created (else 404)."
                ),
                "security": [{"clientKey": []}, {"feedbackKey": []}, {}],
                "parameters": [FEEDBACK_ID],
                "responses": {"200": _json(_ref("FeedbackRetractAck"), "Retracted"),
                              **_errors("400", "401", "403", "404", "429", "503")},
            },
            "options": {**PREFLIGHT, "parameters": [FEEDBACK_ID, *PREFLIGHT["parameters"]]},
        },
        "/healthz": {"get": {"tags": ["ops"], "summary": "Liveness", "responses": {"200": _json({"type": "object"}, "Alive")}}},
        "/readyz": {
            "get": {
                "tags": ["ops"],
                "summary": "Readiness: registry loaded, upstream configured, ledger queue not full, database reachable",
                "responses": {"200": _json({"type": "object"}, "Ready"), "503": _json({"type": "object"}, "Not ready")},
            }
        },
        "/metrics": {
            "get": {
                "tags": ["ops"],
                "summary": "Prometheus exposition (aggregated over workers)",
                "responses": {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }
        },
        "/openapi.json": {
            "get": {"tags": ["ops"], "summary": "This document", "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}
        },
        "/admin/specs": {
            "get": {"tags": ["admin"], "summary": "Specs, versions and labels", "security": ADMIN,
                    "responses": {"200": _json(_ref("SpecList"), "Every spec"), **_errors("401", "403", "503")}},
        },
        "/admin/specs/{name}/versions": {
            "post": {
                "tags": ["admin"], "summary": "Publish a new immutable version", "security": ADMIN, "parameters": [NAME],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("PublishRequest")}}},
                "responses": {"201": _json(_ref("Published"), "Published"), **_errors("400", "401", "403", "409", "413", "503")},
            }
        },
        "/admin/specs/{name}/versions/{ref}": {
            "get": {
                "tags": ["admin"], "summary": "One version's text and front matter", "security": ADMIN,
                "parameters": [NAME, {"name": "ref", "in": "path", "required": True, "description": "a version number or a label",
                                      "schema": {"type": "string"}}],
                "responses": {"200": _json(_ref("Version"), "The version"), **_errors("401", "403", "404", "503")},
            }
        },
        "/admin/specs/{name}/labels/{label}": {
            "put": {
                "tags": ["admin"], "summary": "Move a label (promote, roll back)", "security": ADMIN, "parameters": [NAME, LABEL],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("LabelRequest")}}},
                "responses": {"200": _json(_ref("Spec"), "The spec after the move"),
                              **_errors("400", "401", "403", "404", "413", "503")},
            }
        },
        **{
            f"/admin/specs/{{name}}/versions/{{version}}/{action}": {
                "post": {
                    "tags": ["admin"], "summary": summary, "security": ADMIN, "parameters": [NAME, VERSION],
                    "responses": {"200": _json(_ref("Hold"), "The decided hold"),
                                  **_errors("400", "401", "403", "404", "409", "503")},
                }
            }
            for action, summary in HOLD_ACTIONS.items()
        },
        "/admin/feedback/export": {
            "get": {
                "tags": ["admin"], "summary": "Feedback joined to inferences, as JSON lines", "security": ADMIN,
                "parameters": [{"name": "spec", "in": "query", "schema": {"type": "string"}},
                               {"name": "since", "in": "query", "schema": {"type": "number"}, "description": "Unix time"}],
                "responses": {"200": {"description": "One event per line",
                                      "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
                              **_errors("400", "401", "403", "503")},
            }
        },
        "/admin/users/{user}": {
            "delete": {
                "tags": ["admin"], "summary": "Erase an end user: their inferences and every judgment on them, and their feedback",
                "description": (
                    "The user id as the app sends it (`user`, `safety_identifier`, `X-User-Id`) or as stored (`addr:...`, "
                    "`pii:...`). Inferences that name no user and that this user judged go too. Durable before the "
                    "answer; answers the counts (0 and 0 for an unknown user). See docs/data.md."
                ),
                "security": ADMIN,
                "parameters": [{"name": "user", "in": "path", "required": True,
                                "schema": {"type": "string", "minLength": 1, "maxLength": 288}}],
                "responses": {"200": _json(_ref("Erased"), "Erased"), **_errors("400", "401", "403", "503")},
            }
        },
        "/console/login": {
            "post": {
                "tags": ["console"], "summary": "Log in with the admin key: sets the session cookie",
                "requestBody": _form({"key": {"type": "string"}, "next": {"type": "string"}}, ["key"]),
                "responses": {**REDIRECT, "401": HTML | {"description": "Wrong key (the login page again)"},
                              **_errors("400", "403", "404", "413", "429")},
            }
        },
        "/console/logout": {
            "post": {
                "tags": ["console"], "summary": "End the session", "security": CONSOLE,
                "requestBody": _form({"csrf": {"type": "string"}}, ["csrf"]),
                "responses": {**REDIRECT, **CONSOLE_FORM_ERRORS},
            }
        },
        "/console/specs/{name}/promote": {
            "post": {
                "tags": ["console"], "summary": "Set `production` to a version (the admin API's label move)", "security": CONSOLE,
                "parameters": [NAME],
                "requestBody": _form({"csrf": {"type": "string"}, "version": {"type": "string", "pattern": "^[0-9]+$"}},
                                     ["csrf", "version"]),
                "responses": {**REDIRECT, **CONSOLE_FORM_ERRORS},
            }
        },
        "/console/specs/{name}/rollback": {
            "post": {
                "tags": ["console"], "summary": "Set `production` back to the version the current one was made from",
                "security": CONSOLE, "parameters": [NAME],
                "requestBody": _form({"csrf": {"type": "string"},
                                      "from": {"type": "string", "description": "the production version the form was made for"}},
                                     ["csrf"]),
                "responses": {**REDIRECT, **CONSOLE_FORM_ERRORS},
            }
        },
        **{
            f"/console/specs/{{name}}/versions/{{version}}/{action}": {
                "post": {
                    "tags": ["console"], "summary": summary + " (the admin API's code)", "security": CONSOLE,
                    "parameters": [NAME, VERSION], "requestBody": _form({"csrf": {"type": "string"}}, ["csrf"]),
                    "responses": {**REDIRECT, **CONSOLE_FORM_ERRORS},
                }
            }
            for action, summary in HOLD_ACTIONS.items()
        },
        "/v1/chat/completions": {"post": _openai("Chat completion, with the spec as the first system message", "chat/create")},
        "/v1/responses": {"post": _openai("Responses API, with the spec in `instructions`", "responses/create")},
        "/v1/completions": {"post": _openai("Legacy completion (no spec)", "completions/create")},
        "/v1/embeddings": {"post": _openai("Embeddings (no spec)", "embeddings/create")},
        "/v1/models": {"get": _openai("The upstream's models plus the route aliases", "models/list", method="get")},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "speclearn proxy",
            "version": "0.1.0",
            "description": (
                "An OpenAI-compatible proxy that injects a learned, versioned system prompt (a spec). This document "
                "describes the proxy's own endpoints in full; the OpenAI routes are described by reference. Every "
                "error is `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`. The console's pages (`/console/...`, "
                "HTML) are for people; its form actions are listed here."
            ),
        },
        "externalDocs": {"description": "OpenAI API reference (the /v1 routes)", "url": OPENAI_DOCS},
        "tags": [
            {"name": "feedback"}, {"name": "admin"}, {"name": "console"}, {"name": "ops"},
            {"name": "openai", "description": "OpenAI-compatible routes, relayed", "externalDocs": {"url": OPENAI_DOCS}},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {
                "clientKey": {"type": "http", "scheme": "bearer",
                              "description": "a key from SPECLEARN_API_KEYS (open proxy: none)"},
                "feedbackKey": {"type": "http", "scheme": "bearer",
                                "description": "a publishable key from SPECLEARN_FEEDBACK_KEYS: /v1/feedback only"},
                "adminKey": {"type": "http", "scheme": "bearer", "description": "SPECLEARN_ADMIN_KEY"},
                "consoleSession": {"type": "apiKey", "in": "cookie", "name": "speclearn_console",
                                   "description": "from POST /console/login; forms also carry the session's `csrf` token"},
            },
        },
    }


DOCUMENT = build()


async def document(request: Request) -> Response:
    return json_response(DOCUMENT)
