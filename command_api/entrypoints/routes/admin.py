"""Operator endpoints: every manual action becomes a command with the operator as actor and a reason.

Callers need `role: operator`, or `role: service` (the admin app) naming the operator in
`X-Operator`. Subscription commands are routed to the owner's account stream, found in the
read model; plan commands go to the plan's stream, keyed by the plan id.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Path
from fastapi.responses import Response

from command_api.entrypoints.deps import CurrentOperator, OperatorCommand, PreferHeader, ServicesDep
from command_api.adapters.intake import Prepared
from command_api.entrypoints.models import (
    PLAN_ID_PATTERN,
    AdminArchivePlanRequest,
    AdminAutoRenewRequest,
    AdminCancelRequest,
    AdminCreatePlanRequest,
    AdminCreatePromoCodeRequest,
    AdminDeactivatePromoCodeRequest,
    AdminExtendRequest,
    AdminGrantRequest,
    AdminRefundRequest,
    AdminSchedulePriceChangeRequest,
    CommandStatus,
    PROMO_CODE_INPUT,
    PromoCode,
    PromoCodeList,
)
from command_api.domain.problems import ProblemError
from command_api.entrypoints.routes.common import (
    Limit, Offset, command_responses, command_status_response, plan_price_at, promo_code_view, read_responses,
)
from schemas import (
    AdminCancelSubscription,
    AdminRefund,
    ArchivePlan,
    CreatePlan,
    CreatePromoCode,
    Customer,
    DeactivatePromoCode,
    ExtendSubscription,
    GrantSubscription,
    SchedulePriceChange,
    SetAutoRenew,
    account_stream,
    derived_id,
    plan_stream,
    promo_stream,
)
from typing import Annotated

router = APIRouter(prefix="/v1/admin", tags=["admin"])


async def _owner(services: ServicesDep, subscription_id: uuid.UUID) -> str:
    row = await services.reads.subscription(subscription_id, None)
    if row is None:
        raise ProblemError(404, "not-found", "Not found", "no such subscription")
    return str(row["user_id"])


@router.post(
    "/subscriptions/{subscription_id}/extend", status_code=202, response_model=CommandStatus, responses=command_responses()
)
async def extend_subscription(
    subscription_id: uuid.UUID, body: AdminExtendRequest, services: ServicesDep, ctx: OperatorCommand
) -> Response:
    """Move a subscription's period end forward by some days."""

    async def prepare(command_id: uuid.UUID) -> Prepared:
        user_id = await _owner(services, subscription_id)
        payload = ExtendSubscription(subscription_id=subscription_id, days=body.days, reason=body.reason)
        return Prepared(payload, account_stream(user_id), user_id)

    return await services.intake.submit(ctx, "ExtendSubscription", body, prepare)


@router.post("/subscriptions/grant", status_code=202, response_model=CommandStatus, responses=command_responses())
async def grant_subscription(body: AdminGrantRequest, services: ServicesDep, ctx: OperatorCommand) -> Response:
    """Give a user a subscription without payment."""

    async def prepare(command_id: uuid.UUID) -> Prepared:
        if await services.reads.plan(body.plan_id) is None:
            raise ProblemError(422, "plan-not-available", "Plan not available", f"plan {body.plan_id!r} does not exist")
        payload = GrantSubscription(
            subscription_id=derived_id("subscription", command_id),
            plan_id=body.plan_id,
            days=body.days,
            customer=Customer(email=body.email, locale=body.locale or "ru"),
            reason=body.reason,
        )
        return Prepared(payload, account_stream(body.user_id), body.user_id)

    return await services.intake.submit(ctx, "GrantSubscription", body, prepare)


@router.post(
    "/subscriptions/{subscription_id}/cancel", status_code=202, response_model=CommandStatus, responses=command_responses()
)
async def admin_cancel_subscription(
    subscription_id: uuid.UUID, body: AdminCancelRequest, services: ServicesDep, ctx: OperatorCommand
) -> Response:
    """End a subscription now, with or without a refund of the unused days."""

    async def prepare(command_id: uuid.UUID) -> Prepared:
        user_id = await _owner(services, subscription_id)
        payload = AdminCancelSubscription(subscription_id=subscription_id, refund=body.refund, reason=body.reason)
        return Prepared(payload, account_stream(user_id), user_id)

    return await services.intake.submit(ctx, "AdminCancelSubscription", body, prepare)


@router.post(
    "/subscriptions/{subscription_id}/refund", status_code=202, response_model=CommandStatus, responses=command_responses()
)
async def admin_refund(
    subscription_id: uuid.UUID, body: AdminRefundRequest, services: ServicesDep, ctx: OperatorCommand
) -> Response:
    """Refund an amount of a subscription's last payment (the subscription stays as it is)."""

    async def prepare(command_id: uuid.UUID) -> Prepared:
        user_id = await _owner(services, subscription_id)
        if body.amount.minor <= 0:
            raise ProblemError(422, "validation-error", "Request is not valid", "amount must be positive")
        payload = AdminRefund(subscription_id=subscription_id, amount=body.amount, reason=body.reason)
        return Prepared(payload, account_stream(user_id), user_id)

    return await services.intake.submit(ctx, "AdminRefund", body, prepare)


@router.post(
    "/subscriptions/{subscription_id}/auto-renew",
    status_code=202,
    response_model=CommandStatus,
    responses=command_responses(),
)
async def admin_set_auto_renew(
    subscription_id: uuid.UUID, body: AdminAutoRenewRequest, services: ServicesDep, ctx: OperatorCommand
) -> Response:
    """Turn a subscription's automatic renewal on or off."""

    async def prepare(command_id: uuid.UUID) -> Prepared:
        user_id = await _owner(services, subscription_id)
        payload = SetAutoRenew(subscription_id=subscription_id, enabled=body.enabled, reason=body.reason)
        return Prepared(payload, account_stream(user_id), user_id)

    return await services.intake.submit(ctx, "SetAutoRenew", body, prepare)


@router.post("/plans", status_code=202, response_model=CommandStatus, responses=command_responses())
async def create_plan(body: AdminCreatePlanRequest, services: ServicesDep, ctx: OperatorCommand) -> Response:
    """Put a new plan on sale."""

    async def prepare(command_id: uuid.UUID) -> Prepared:
        if body.price.minor <= 0:
            raise ProblemError(422, "validation-error", "Request is not valid", "price must be positive")
        payload = CreatePlan(
            plan_id=body.plan_id,
            name=body.name,
            price=body.price,
            period_days=body.period_days,
            description=body.description,
            product=body.product,
            reason=body.reason,
            vat_code=body.vat_code,
            payment_subject=body.payment_subject,
            payment_mode=body.payment_mode,
            trial_days=body.trial_days,
        )
        return Prepared(payload, plan_stream(body.plan_id), body.plan_id)

    return await services.intake.submit(ctx, "CreatePlan", body, prepare)


@router.post("/plans/{plan_id}/archive", status_code=202, response_model=CommandStatus, responses=command_responses())
async def archive_plan(
    plan_id: Annotated[str, Path(pattern=PLAN_ID_PATTERN)],
    body: AdminArchivePlanRequest,
    services: ServicesDep,
    ctx: OperatorCommand,
) -> Response:
    """Stop selling a plan (existing subscriptions keep it)."""

    async def prepare(command_id: uuid.UUID) -> Prepared:
        if await services.reads.plan(plan_id) is None:
            raise ProblemError(404, "not-found", "Not found", "no such plan")
        payload = ArchivePlan(plan_id=plan_id, reason=body.reason)
        return Prepared(payload, plan_stream(plan_id), plan_id)

    return await services.intake.submit(ctx, "ArchivePlan", body, prepare)


@router.post("/plans/{plan_id}/price-changes", status_code=202, response_model=CommandStatus, responses=command_responses())
async def schedule_price_change(
    plan_id: Annotated[str, Path(pattern=PLAN_ID_PATTERN)],
    body: AdminSchedulePriceChangeRequest,
    services: ServicesDep,
    ctx: OperatorCommand,
) -> Response:
    """Schedule a new price for a plan from a future date on. Purchases from that date pay it;
    existing subscribers are emailed and pay it from their first renewal at least the notice
    period (30 days by default) after the email — unless `grandfather` keeps them on their price."""

    async def prepare(command_id: uuid.UUID) -> Prepared:
        plan = await services.reads.plan(plan_id)
        if plan is None:
            raise ProblemError(404, "not-found", "Not found", "no such plan")
        if plan["archived"]:
            raise ProblemError(422, "plan-archived", "Plan archived", f"plan {plan_id!r} is archived: it has no price to change")
        if body.effective_at <= services.clock.now():
            raise ProblemError(422, "validation-error", "Request is not valid", "effective_at must be in the future")
        if body.price.minor <= 0:
            raise ProblemError(422, "validation-error", "Request is not valid", "price must be positive")
        if body.price.currency != plan["currency"]:
            raise ProblemError(422, "validation-error", "Request is not valid", f"the plan is priced in {plan['currency']}")
        if plan_price_at(plan, body.effective_at)[0] == body.price.minor:
            raise ProblemError(422, "same-price", "Same price", f"plan {plan_id!r} already costs {body.price} then")
        payload = SchedulePriceChange(
            plan_id=plan_id, price=body.price, effective_at=body.effective_at, grandfather=body.grandfather, reason=body.reason
        )
        return Prepared(payload, plan_stream(plan_id), plan_id)

    return await services.intake.submit(ctx, "SchedulePriceChange", body, prepare)


@router.post("/promo-codes", status_code=202, response_model=CommandStatus, responses=command_responses())
async def create_promo_code(body: AdminCreatePromoCodeRequest, services: ServicesDep, ctx: OperatorCommand) -> Response:
    """Create a promo code: percent or amount off the first period or the first N periods, with an
    expiry, an optional usage limit across customers and an optional plan restriction; each customer
    may use it once. Codes are upper-cased."""

    async def prepare(command_id: uuid.UUID) -> Prepared:
        if (body.percent_off is None) == (body.amount_off is None):
            raise ProblemError(422, "validation-error", "Request is not valid", "give either percent_off or amount_off")
        if body.amount_off is not None and body.amount_off.minor <= 0:
            raise ProblemError(422, "validation-error", "Request is not valid", "amount_off must be positive")
        if body.expires_at.tzinfo is None:
            raise ProblemError(422, "validation-error", "Request is not valid", "expires_at must carry a timezone")
        code = body.code.upper()
        payload = CreatePromoCode(
            code=code, percent_off=body.percent_off, amount_off=body.amount_off, periods=body.periods, expires_at=body.expires_at,
            max_redemptions=body.max_redemptions, plan_ids=body.plan_ids, reason=body.reason,
        )
        return Prepared(payload, promo_stream(code), code)

    return await services.intake.submit(ctx, "CreatePromoCode", body, prepare)


@router.post("/promo-codes/{code}/deactivate", status_code=202, response_model=CommandStatus, responses=command_responses())
async def deactivate_promo_code(
    code: Annotated[str, Path(pattern=PROMO_CODE_INPUT)],
    body: AdminDeactivatePromoCodeRequest,
    services: ServicesDep,
    ctx: OperatorCommand,
) -> Response:
    """Stop accepting a code (subscriptions bought with it keep their discount)."""

    async def prepare(command_id: uuid.UUID) -> Prepared:
        upper = code.upper()
        if await services.reads.promo_code(upper) is None:
            raise ProblemError(404, "promo-code-not-found", "Promo code not found", f"there is no promo code {upper!r}",
                               code="promo_code_not_found")
        return Prepared(DeactivatePromoCode(code=upper, reason=body.reason), promo_stream(upper), upper)

    return await services.intake.submit(ctx, "DeactivatePromoCode", body, prepare)


@router.get("/promo-codes", response_model=PromoCodeList, responses=read_responses(403))
async def list_promo_codes(services: ServicesDep, operator: CurrentOperator, limit: Limit = 50, offset: Offset = 0) -> PromoCodeList:
    """Every promo code, newest first, with its uses and what is left."""
    rows = await services.reads.promo_codes(limit=limit, offset=offset)
    return PromoCodeList(items=[promo_code_view(r) for r in rows], limit=limit, offset=offset)


@router.get("/promo-codes/{code}", response_model=PromoCode, responses=read_responses(403, 404))
async def get_promo_code(code: Annotated[str, Path(pattern=PROMO_CODE_INPUT)], services: ServicesDep, operator: CurrentOperator) -> PromoCode:
    """One promo code with its uses and what is left."""
    row = await services.reads.promo_code(code.upper())
    if row is None:
        raise ProblemError(404, "not-found", "Not found", "no such promo code")
    return promo_code_view(row)


@router.get("/commands/{command_id}", response_model=CommandStatus, responses=read_responses(403, 404))
async def admin_get_command(command_id: uuid.UUID, services: ServicesDep, operator: CurrentOperator, prefer: PreferHeader = None) -> Response:
    """Any command's status, whoever sent it (`Prefer: wait=N` waits for its end, as for users)."""
    return await command_status_response(services, command_id, None, prefer)
