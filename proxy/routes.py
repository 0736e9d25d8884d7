"""Every public path and its handler, and nothing else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from . import admin, console, feedback, inference, openapi, ops, passthrough

SPEC_PREFIX = "/specs/{spec}"


def _with_spec_prefix(path: str, endpoint: Callable[[Request], Awaitable[Response]], methods: list[str]) -> list[Route]:
    return [Route(path, endpoint, methods=methods), Route(SPEC_PREFIX + path, endpoint, methods=methods)]


async def chat_completions(request: Request) -> Response:
    return await inference.handle(request, inference.CHAT)


async def responses(request: Request) -> Response:
    return await inference.handle(request, inference.RESPONSES)


async def completions(request: Request) -> Response:
    return await inference.handle(request, inference.COMPLETIONS)


async def embeddings(request: Request) -> Response:
    return await passthrough.relay(request, "/embeddings", "embeddings")


async def other_v1(request: Request) -> Response:
    return await passthrough.relay(request, "/" + request.path_params["path"], "passthrough")


ANY = ["GET", "POST", "PUT", "PATCH", "DELETE"]

ROUTES: list[BaseRoute] = [
    *_with_spec_prefix("/v1/chat/completions", chat_completions, ["POST"]),
    *_with_spec_prefix("/v1/responses", responses, ["POST"]),
    *_with_spec_prefix("/v1/completions", completions, ["POST"]),
    *_with_spec_prefix("/v1/embeddings", embeddings, ["POST"]),
    *_with_spec_prefix("/v1/models", passthrough.models, ["GET"]),
    Route("/v1/feedback", feedback.post_feedback, methods=["POST"]),
    Route("/v1/feedback", feedback.feedback_preflight, methods=["OPTIONS"]),
    Route("/v1/feedback", feedback.wrong_method, methods=["GET", "PUT", "PATCH", "DELETE"]),
    Route("/v1/feedback/{feedback_id}", feedback.put_feedback, methods=["PUT"]),
    Route("/v1/feedback/{feedback_id}", feedback.delete_feedback, methods=["DELETE"]),
    Route("/v1/feedback/{feedback_id}", feedback.item_preflight, methods=["OPTIONS"]),
    Route("/v1/feedback/{feedback_id}", feedback.wrong_item_method, methods=["GET", "POST", "PATCH"]),
    Route("/healthz", ops.healthz, methods=["GET"]),
    Route("/readyz", ops.readyz, methods=["GET"]),
    Route("/metrics", ops.prometheus, methods=["GET"]),
    Route("/admin/specs", admin.list_specs, methods=["GET"]),
    Route("/admin/specs/{name}/versions", admin.publish, methods=["POST"]),
    Route("/admin/specs/{name}/versions/{ref}", admin.get_version, methods=["GET"]),
    Route("/admin/specs/{name}/labels/{label}", admin.set_label, methods=["PUT"]),
    Route("/admin/specs/{name}/versions/{version}/approve", admin.approve, methods=["POST"]),
    Route("/admin/specs/{name}/versions/{version}/reject", admin.reject, methods=["POST"]),
    Route("/admin/feedback/export", admin.export_feedback, methods=["GET"]),
    Route("/admin/users/{user:path}", admin.forget_user, methods=["DELETE"]),
    Route("/openapi.json", openapi.document, methods=["GET"]),
    *_with_spec_prefix("/v1/{path:path}", other_v1, ANY),
    Mount("/console", routes=console.ROUTES),
]
