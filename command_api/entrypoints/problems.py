"""Problem documents on the HTTP edge: the exception handlers and the OpenAPI `responses` entries.

Every error becomes `application/problem+json` (the document itself: `command_api/domain/problems.py`).
Exceptions the code does not expect become a 500 problem without internals; database or broker
outages become 503 with `Retry-After`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from command_api.domain.problems import PROBLEM_JSON, ProblemError, problem_body
from infra.logging import get_logger

log = get_logger(__name__)


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, slug, title, detail, instance, **extensions),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _json_safe(value: Any) -> Any:
    """Validation error inputs can be anything (bytes, Decimals); keep the body serialisable."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)


_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def install_problem_handlers(app: FastAPI) -> None:
    """Every error path answers problem+json; nothing a client sends reaches a bare 500."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return JSONResponse(
            exc.body(request.url.path), status_code=exc.status, media_type=PROBLEM_JSON, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(part) for part in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
            for err in exc.errors()
        ]
        malformed = any(e["type"] == "json_invalid" for e in errors)
        return problem_response(
            422,
            "malformed-json" if malformed else "validation-error",
            "Request body is not valid JSON" if malformed else "Request is not valid",
            "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)[:1000],
            instance=request.url.path,
            errors=_json_safe(errors),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        return problem_response(
            exc.status_code, slug, title, detail, instance=request.url.path, headers=dict(exc.headers or {})
        )

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("dependency_unavailable", error=repr(exc)[:500], path=request.url.path)
        return problem_response(
            503,
            "service-unavailable",
            "Service temporarily unavailable",
            "a backing service did not answer in time; retry with the same Idempotency-Key",
            instance=request.url.path,
            headers={"Retry-After": "1"},
        )

    outages = (
        OperationalError, PoolTimeout, asyncio.TimeoutError, ConnectionError, OSError,
        asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.TooManyConnectionsError,
        asyncpg.CannotConnectNowError, asyncpg.exceptions.OperatorInterventionError,
    )
    for exc_type in outages:
        app.add_exception_handler(exc_type, _unavailable)

    @app.exception_handler(DBAPIError)
    async def _db(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return await _unavailable(request, exc)
        return await _internal(request, exc)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled_error", path=request.url.path, error=repr(exc)[:500], exc_info=exc)
        return problem_response(500, "internal-error", "Internal error", instance=request.url.path)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting problem+json bodies for the given statuses."""
    descriptions = {
        400: "Malformed request",
        401: "Missing, expired or invalid access token",
        403: "The token does not allow this",
        404: "No such resource (or not yours)",
        409: "A request with this Idempotency-Key is still in flight",
        422: "Validation failed, or the Idempotency-Key was used with a different request",
        502: "The command failed downstream (dead-lettered after retries)",
        503: "PostgreSQL or Kafka unavailable; retry with the same Idempotency-Key",
    }
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        slug, title = _HTTP_SLUGS.get(status, ("error", descriptions.get(status, "Error")))
        out[status] = {
            "description": descriptions.get(status, title),
            "content": {
                PROBLEM_JSON: {
                    "schema": {"$ref": "#/components/schemas/Problem"},
                    "example": problem_body(status, slug, title, descriptions.get(status)),
                }
            },
        }
    return out
