"""Liveness, readiness and Prometheus metrics for whoever runs the API."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from command_api.entrypoints.deps import ServicesDep
from command_api.entrypoints.models import Health

router = APIRouter(tags=["operations"])
metrics_router = APIRouter(tags=["operations"])  # mounted only when metrics are served on the API's port
CHECK_TIMEOUT_S = 2.0


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive and serving."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={
        503: {
            "model": Health,
            "description": "PostgreSQL or Kafka is not reachable",
            "content": {"application/json": {"example": {"status": "unavailable", "checks": {"postgres": "ok", "kafka": "timeout"}}}},
        }
    },
)
async def readyz(services: ServicesDep) -> JSONResponse:
    """PostgreSQL and Kafka are reachable (each checked with a timeout)."""

    async def postgres() -> None:
        async with services.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def kafka() -> None:
        if not await services.producer.client.force_metadata_update():
            raise ConnectionError("metadata request failed")

    checks: dict[str, str] = {}
    for name, check in (("postgres", postgres), ("kafka", kafka)):
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
            checks[name] = "ok"
        except TimeoutError:
            checks[name] = "timeout"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported, never raised
            checks[name] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"example": "api_commands_published_total{command_type=\"PurchaseSubscription\"} 3.0\n"}}}},
)
async def metrics(services: ServicesDep) -> Response:
    """Prometheus metrics: requests, latency, commands published, idempotency, webhooks."""
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)


_RETURN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Payment</title></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 4em auto">
<h1>Thank you</h1>
<p>We are confirming your payment with the bank. Your subscription becomes active as soon as
it is confirmed; you will get an email. You can close this page.</p>
</body></html>
"""


@router.get(
    "/v1/return",
    response_class=HTMLResponse,
    tags=["subscriptions"],
    responses={200: {"content": {"text/html": {"example": "<!doctype html><html>…Thank you…</html>"}}}},
)
async def payment_return() -> HTMLResponse:
    """Where YooKassa sends the customer back after the payment page (YOOKASSA_RETURN_URL)."""
    return HTMLResponse(_RETURN_PAGE)
