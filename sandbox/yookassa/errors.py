"""YooKassa's error responses: `{"type": "error", "id", "code", "description", "parameter"}`."""

from __future__ import annotations

import uuid
from typing import Any


class ApiError(Exception):
    """An error the API answers with YooKassa's error JSON and HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        description: str,
        parameter: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description
        self.parameter = parameter
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "error",
            "id": str(uuid.uuid4()),
            "code": self.code,
            "description": self.description,
        }
        if self.parameter:
            body["parameter"] = self.parameter
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body


def invalid_request(description: str, parameter: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request", description, parameter)


def not_found(description: str = "Object not found") -> ApiError:
    return ApiError(404, "not_found", description)


def invalid_credentials() -> ApiError:
    return ApiError(
        401,
        "invalid_credentials",
        "Login and password are incorrect. Specify your shopId and secret key for Basic authorization.",
        "Authorization",
    )


def internal_error() -> ApiError:
    return ApiError(
        500,
        "internal_server_error",
        "Internal server error. The result of the operation is unknown: repeat the request with the "
        "same Idempotence-Key and data.",
    )


def too_many_requests(retry_after_ms: int) -> ApiError:
    return ApiError(429, "too_many_requests", "Too many requests. Try again later.", retry_after=retry_after_ms)
