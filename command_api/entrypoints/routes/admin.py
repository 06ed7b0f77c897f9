"""Operator endpoints: every manual action becomes a command with the operator as actor and a reason.

Callers need `role: operator`, or `role: service` (the admin app) naming the operator in
`X-Operator`. Subscription commands are routed to the owner's account stream, found in the
read model; plan commands go to the plan's stream, keyed by the plan id.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Path
from fastapi.responses import Response

from command_api.entrypoints.deps import CurrentOperator, OperatorCommand, ServicesDep
from command_api.adapters.intake import Prepared, status_body
from command_api.entrypoints.models import (
    PLAN_ID_PATTERN,
    AdminArchivePlanRequest,
    AdminAutoRenewRequest,
    AdminCancelRequest,
    AdminCreatePlanRequest,
    AdminExtendRequest,
    AdminGrantRequest,
    AdminRefundRequest,
    CommandStatus,
)
from command_api.domain.problems import ProblemError
from command_api.entrypoints.routes.common import command_responses, read_responses
from schemas import (
    AdminCancelSubscription,
    AdminRefund,
    ArchivePlan,
    CreatePlan,
    Customer,
    ExtendSubscription,
    GrantSubscription,
    SetAutoRenew,
    account_stream,
    derived_id,
    plan_stream,
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


@router.get("/commands/{command_id}", response_model=CommandStatus, responses=read_responses(403, 404))
async def admin_get_command(command_id: uuid.UUID, services: ServicesDep, operator: CurrentOperator) -> CommandStatus:
    """Any command's status, whoever sent it."""
    row = await services.reads.command(command_id)
    if row is not None:
        return CommandStatus.model_validate(status_body(command_id, row["command_type"], row))
    accepted = await services.idempotency.accepted_command(command_id, None)
    if accepted is not None:
        return CommandStatus.model_validate(status_body(command_id, accepted))
    raise ProblemError(404, "not-found", "Not found", "no such command")
