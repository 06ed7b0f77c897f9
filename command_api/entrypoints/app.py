"""The HTTP app: `create_app(settings)` wires the routes, middleware and problem handlers.

Nothing is created at import time. The lifespan asks the composition root (`command_api/bootstrap.py`)
for every adapter built from the settings it was given and lets it tear them down in reverse
order, so a test can run several apps side by side, each with its own topic and database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from command_api.bootstrap import load_settings, running
from command_api.domain.problems import Problem
from command_api.entrypoints.middleware import BodyLimitMiddleware, RequestContextMiddleware
from command_api.entrypoints.problems import install_problem_handlers
from command_api.entrypoints.routes import admin, ops, user, webhooks
from command_api.metrics import Metrics
from infra.settings import Settings

DESCRIPTION = """
Subscription billing: buy a plan (paid through YooKassa), cancel with a refund for the unused days,
follow every command to its end.

* **Auth** — `Authorization: Bearer <access token>` (JWT, `typ: access`). `sub` is your user id;
  buying needs an `email` claim. Operator endpoints need `role: operator` (or `role: service` with
  `X-Operator`).
* **Idempotency** — every state-changing POST needs an `Idempotency-Key`. The same key and body
  return the first response (for at least 24 hours, header `Idempotent-Replayed: true`); the same
  key with another body is a 422; a request whose key is still being handled gets a 409.
* **Asynchronous commands** — a POST answers `202` once the command is safely in Kafka, with
  `Location: /v1/commands/{id}`. Send `Prefer: wait=5` to wait up to 5 s (at most 10) for the
  outcome instead (a purchase's outcome has the `confirmation_url`).
* **Errors** — always `application/problem+json` (RFC 9457).
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with running(app.state.settings, app.state.metrics) as services:
        app.state.services = services
        yield


def create_app(settings: Settings | None = None) -> FastAPI:
    """A ready-to-serve API for these settings (defaults: the environment)."""
    resolved = load_settings(settings)
    docs = resolved.docs_enabled
    app = FastAPI(
        title="Billing command API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Closed (API_DOCS_ENABLED=false, the production default): no routes at all, so 404.
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        openapi_tags=[
            {"name": "plans", "description": "What is on sale"},
            {"name": "subscriptions", "description": "Buy, cancel, renew"},
            {"name": "payments", "description": "Payments and refunds"},
            {"name": "commands", "description": "Where a command is and how it ended"},
            {"name": "admin", "description": "Operator actions; each is a command with a reason"},
            {"name": "webhooks", "description": "Provider notifications"},
            {"name": "operations", "description": "Health, readiness, metrics"},
        ],
    )
    app.state.settings = resolved
    app.state.metrics = Metrics()
    install_problem_handlers(app)
    for module in (user, admin, webhooks, ops):
        app.include_router(module.router)
    if resolved.api_metrics_enabled and resolved.api_metrics_port is None:
        app.include_router(ops.metrics_router)
    # Added first = inside the request context, so a 413 is logged, counted and has its request id.
    app.add_middleware(BodyLimitMiddleware, max_bytes=resolved.api_max_request_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
