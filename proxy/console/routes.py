"""The console's paths, mounted at /console by proxy/routes.py (after every OpenAI route, so the
hot path never tries them)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from . import views
from .views import HERE

ROUTES: list[BaseRoute] = [
    # public assets (the stylesheet and the feedback snippet for other sites), console on or off
    Mount("/static", StaticFiles(directory=HERE / "static"), name="console-static"),
    Route("/", views.home, methods=["GET"]),
    Route("/login", views.login_form, methods=["GET"]),
    Route("/login", views.login, methods=["POST"]),
    Route("/logout", views.logout, methods=["POST"]),
    Route("/specs", views.specs, methods=["GET"]),
    Route("/specs/{name}", views.spec, methods=["GET"]),
    Route("/specs/{name}/versions/{version:int}", views.version, methods=["GET"]),
    Route("/specs/{name}/promote", views.promote, methods=["POST"]),
    Route("/specs/{name}/rollback", views.rollback, methods=["POST"]),
    Route("/specs/{name}/versions/{version:int}/approve", views.approve, methods=["POST"]),
    Route("/specs/{name}/versions/{version:int}/reject", views.reject, methods=["POST"]),
]
