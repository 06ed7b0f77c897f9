"""Shared bits of the routes: read-model rows → response models, documented responses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from command_api.entrypoints.models import CommandStatus, Payment, Plan, Refund, Subscription
from command_api.entrypoints.problems import problem_responses
from command_api.adapters.read_models import Row
from schemas import Money

Limit = Annotated[int, Query(ge=1, le=100, description="page size")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="rows to skip")]


def money(minor: int | None, currency: str) -> Money:
    return Money.from_minor(int(minor or 0), currency)


def plan_view(row: Row) -> Plan:
    return Plan(
        plan_id=row["plan_id"],
        name=row["name"],
        price=money(row["price_minor"], row["currency"]),
        period_days=row["period_days"],
        description=row["description"],
        archived=row["archived"],
        trial_days=row.get("trial_days") or 0,
    )


def subscription_fields(row: Row) -> dict[str, Any]:
    currency = row["currency"]
    return {
        "subscription_id": row["subscription_id"],
        "plan_id": row["plan_id"],
        "plan_name": row["plan_name"],
        "status": row["status"],
        "auto_renew": row["auto_renew"],
        "cancel_at_period_end": row["cancel_at_period_end"],
        "period_start": row["period_start"],
        "period_end": row["period_end"],
        "price": money(row["price_minor"], currency),
        "amount_paid": money(row["amount_paid_minor"], currency),
        "amount_refunded": money(row["amount_refunded_minor"], currency),
        "payment_method_title": row["payment_method_title"],
        "status_reason": row["status_reason"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "canceled_at": row["canceled_at"],
        "expired_at": row["expired_at"],
        "trial": bool(row.get("trial")),
    }


def subscription_view(row: Row) -> Subscription:
    return Subscription(**subscription_fields(row))


def payment_view(row: Row) -> Payment:
    return Payment(
        payment_id=row["payment_id"],
        subscription_id=row["subscription_id"],
        purpose=row["purpose"],
        status=row["status"],
        amount=money(row["amount_minor"], row["currency"]),
        confirmation_url=row["confirmation_url"],
        reason=row["reason"],
        paid_at=row["paid_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def refund_view(row: Row) -> Refund:
    return Refund(
        refund_id=row["refund_id"],
        subscription_id=row["subscription_id"],
        payment_id=row["payment_id"],
        status=row["status"],
        amount=money(row["amount_minor"], row["currency"]),
        days_used=row["days_used"],
        reason=row["reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def read_responses(*extra: int) -> dict[int | str, dict[str, Any]]:
    return problem_responses(401, *extra, 422, 503)


def command_responses() -> dict[int | str, dict[str, Any]]:
    """What every state-changing POST may answer."""
    example = CommandStatus.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
    accepted = {**example, "status": "accepted", "outcome": None}
    return {
        200: {
            "model": CommandStatus,
            "description": "`Prefer: wait=N` and the command succeeded in time: its outcome",
            "content": {"application/json": {"example": example}},
        },
        202: {
            "description": "Accepted: Kafka acknowledged the command; poll `Location` for its outcome",
            "headers": {
                "Location": {"description": "the command's status URL", "schema": {"type": "string"}},
            },
            "content": {"application/json": {"example": accepted}},
        },
        **problem_responses(400, 401, 403, 404, 409, 422, 502, 503),
    }
