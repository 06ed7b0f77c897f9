"""RFC 9457 problem details for every error the API answers, validation included.

A client always gets `application/problem+json` with a stable `type` URI it can switch on, a
human `title`/`detail`, and extensions where they help (`errors` for validation, `command_id`,
`code`, `reason` for a rejected command). The document and the exception that answers it live
here; the handlers that turn every other error into one are `command_api/entrypoints/problems.py`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://billing.example/problems/"


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": TYPE_BASE + "plan-not-found",
                    "title": "Plan not found",
                    "status": 422,
                    "detail": "plan 'gold' does not exist or is archived",
                    "instance": "/v1/subscriptions",
                }
            ]
        },
    )

    type: str = Field(default="about:blank", description="a URI that identifies the problem type")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class ProblemError(Exception):
    """Raise anywhere in a request to answer a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers = headers or {}
        self.extensions = extensions

    def body(self, instance: str | None = None) -> dict[str, Any]:
        return problem_body(self.status, self.slug, self.title, self.detail, instance, **self.extensions)


def problem_body(
    status: int, slug: str, title: str, detail: str | None = None, instance: str | None = None, **extensions: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": TYPE_BASE + slug, "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    body.update(extensions)
    return body


REJECTION_STATUS: dict[str, int] = {
    "promo_code_not_found": 404,
    "promo_code_expired": 409,
    "promo_code_exhausted": 409,
    "promo_code_already_used": 409,
    "promo_code_not_applicable": 422,
    "plan_not_found": 404,
    "subscription_not_found": 404,
    "already_subscribed": 409,
    "same_plan": 409,
    "switch_in_progress": 409,
    "charge_in_progress": 409,
    "refund_in_progress": 409,
    "past_due": 409,
    "not_past_due": 409,  # pay now on a subscription that owes nothing (0117)
    "renewal_in_progress": 409,  # pay now while another charge of the period has no final answer
}
"""The HTTP status of a command the processor rejected, by its rejection code (422 when not listed):
a code that names nothing is 404, one that was valid but no longer is (expired, used up, used
already) is a 409 conflict with the code's state."""


def rejection_status(code: str | None) -> int:
    return REJECTION_STATUS.get(code or "", 422)
