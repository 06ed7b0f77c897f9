"""Shared bits of the routes: read-model rows → response models, documented responses."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import Query
from fastapi.responses import JSONResponse

from command_api.entrypoints.models import (
    CommandStatus, Payment, Plan, PromoCode, PromoCodePreview, Refund, ScheduledPriceChange, Subscription,
)
from command_api.entrypoints.problems import problem_responses
from command_api.adapters.intake import parse_prefer_wait, status_body
from command_api.adapters.read_models import TERMINAL_STATUSES, Row
from command_api.domain.problems import ProblemError
from rules.discounts import discount_minor
from schemas import DEFAULT_PRODUCT, Money

if TYPE_CHECKING:
    from command_api.bootstrap import Services

Limit = Annotated[int, Query(ge=1, le=100, description="page size")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="rows to skip")]


def money(minor: int | None, currency: str) -> Money:
    return Money.from_minor(int(minor or 0), currency)


def price_changes(row: Row) -> list[dict[str, Any]]:
    """A plan row's scheduled prices (`read.plans.price_changes`), by effective date."""
    raw = row.get("price_changes") or "[]"
    changes = orjson.loads(raw) if isinstance(raw, (str, bytes)) else list(raw)
    return sorted(
        ({**c, "effective_at": datetime.fromisoformat(c["effective_at"])} for c in changes), key=lambda c: c["effective_at"]
    )


def plan_price_at(row: Row, now: datetime) -> tuple[int, dict[str, Any] | None]:
    """(the price a purchase pays at `now` in minor units, the next scheduled change or None) —
    the same rule as the processor's `PlanState.price_at`: the newest change in effect wins."""
    price, upcoming = int(row["price_minor"]), None
    for change in price_changes(row):
        if change["effective_at"] <= now:
            price = int(change["price_minor"])
        elif upcoming is None:
            upcoming = change
    return price, upcoming


def plan_view(row: Row, now: datetime) -> Plan:
    price, upcoming = plan_price_at(row, now)
    scheduled = None
    if upcoming is not None:
        scheduled = ScheduledPriceChange(
            price=money(upcoming["price_minor"], row["currency"]), effective_at=upcoming["effective_at"], grandfather=upcoming["grandfather"]
        )
    return Plan(
        plan_id=row["plan_id"],
        name=row["name"],
        price=money(price, row["currency"]),
        period_days=row["period_days"],
        description=row["description"],
        archived=row["archived"],
        product=row.get("product") or DEFAULT_PRODUCT,
        trial_days=row.get("trial_days") or 0,
        scheduled_change=scheduled,
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
        "promo_code": row.get("promo_code"),
        "discount": money(row["discount_minor"], currency) if row.get("discount_minor") else None,
        "promo_periods_left": row.get("promo_periods_left") or 0,
        "product": row.get("product") or DEFAULT_PRODUCT,
        "pending_switch": {
            "plan_id": row["pending_plan_id"],
            "plan_name": row["pending_plan_name"],
            "price": money(row["pending_price_minor"], currency),
            "effective_at": row["pending_effective_at"],
        } if row.get("pending_plan_id") else None,
        "trial": bool(row.get("trial")),
        "upcoming_price": money(row["upcoming_price_minor"], currency) if row.get("upcoming_price_minor") is not None else None,
        "upcoming_price_from": row.get("upcoming_price_at"),
    }


def promo_code_view(row: Row) -> PromoCode:
    currency = row["currency"] or "RUB"
    limit = row["max_redemptions"]
    return PromoCode(
        code=row["code"],
        percent_off=row["percent_off"],
        amount_off=money(row["amount_off_minor"], currency) if row["amount_off_minor"] is not None else None,
        periods=row["periods"],
        expires_at=row["expires_at"],
        max_redemptions=limit,
        plan_ids=orjson.loads(row["plan_ids"]) if isinstance(row["plan_ids"], str) else row["plan_ids"],
        active=row["active"],
        deactivated_reason=row["deactivated_reason"],
        redemptions=row["redemptions"],
        released=row["released"],
        remaining=None if limit is None else max(limit - row["redemptions"], 0),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def promo_preview(row: Row, plan: Row | None, now: datetime) -> PromoCodePreview:
    """The same checks and arithmetic as the processor's (`rules.discounts`), on the read models; the
    once-per-user rule is the processor's alone (the read model does not list who used a code)."""
    view = promo_code_view(row)
    problem = None
    if not view.active or now >= view.expires_at:
        problem = "promo_code_expired"
    elif view.remaining == 0:
        problem = "promo_code_exhausted"
    elif plan is not None and view.plan_ids is not None and plan["plan_id"] not in view.plan_ids:
        problem = "promo_code_not_applicable"
    elif plan is not None and view.amount_off is not None and view.amount_off.currency != plan["currency"]:
        problem = "promo_code_not_applicable"
    priced: dict[str, Any] = {}
    if plan is not None and problem is None:
        off = discount_minor(plan["price_minor"], percent_off=view.percent_off,
                             amount_off_minor=view.amount_off.minor if view.amount_off else None)
        priced = {"list_price": money(plan["price_minor"], plan["currency"]), "discount": money(off, plan["currency"]),
                  "price": money(plan["price_minor"] - off, plan["currency"])}
    return PromoCodePreview(code=view.code, plan_id=plan["plan_id"] if plan else None, applicable=problem is None, problem=problem,
                            periods=view.periods, expires_at=view.expires_at, **priced)


def subscription_view(row: Row) -> Subscription:
    return Subscription(**subscription_fields(row))


def payment_view(row: Row) -> Payment:
    return Payment(
        payment_id=row["payment_id"],
        subscription_id=row["subscription_id"],
        purpose=row["purpose"],
        status=row["status"],
        amount=money(row["amount_minor"], row["currency"]),
        discount=money(row["discount_minor"], row["currency"]) if row.get("discount_minor") else None,
        promo_code=row.get("promo_code"),
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


async def command_status_response(services: Services, command_id: uuid.UUID, scope: str | None, prefer: str | None) -> JSONResponse:
    """`GET …/commands/{id}`: the command's status if `scope` may see it (None: anyone's, for operators).

    With `Prefer: wait=N` a command that has not ended is answered the moment it ends, or after N
    seconds with its status then: one waiting request instead of a polling loop. The wait shares
    the API's one outcome poller (`OutcomeWaiter`), so a thousand waiting clients cost the
    database one statement per poll, where a thousand polling clients cost a thousand requests.
    """
    row = await services.reads.command(command_id)
    visible = row is not None and (scope is None or row["user_id"] == scope)
    accepted = None if visible else await services.idempotency.accepted_command(command_id, scope)
    if not visible and accepted is None:
        raise ProblemError(404, "not-found", "Not found", "no such command")
    command_type = row["command_type"] if row is not None else accepted
    body = status_body(command_id, command_type, row)
    headers: dict[str, str] = {}
    wait_s = parse_prefer_wait(prefer, services.settings.api_max_wait_s)
    if wait_s:
        headers["Preference-Applied"] = f"wait={wait_s:g}"
        if body["status"] not in TERMINAL_STATUSES:
            ended = await services.waiter.wait(command_id, wait_s)
            if ended is None:
                ended = await services.reads.command(command_id)  # processing, perhaps
            if ended is not None:
                body = status_body(command_id, command_type, ended)
    return JSONResponse(CommandStatus.model_validate(body).model_dump(mode="json"), headers=headers)
