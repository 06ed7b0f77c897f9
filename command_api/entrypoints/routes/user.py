"""The customer's endpoints: plans, buying, canceling, auto-renewal, history, command status.

Every query is scoped to the token's user: someone else's subscription, payment or command
answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import Response

from command_api.entrypoints.deps import CurrentUser, PreferHeader, ServicesDep, UserCommand
from command_api.adapters.intake import Prepared, parse_prefer_wait
from command_api.entrypoints.models import (
    PLAN_ID_PATTERN,
    PROMO_CODE_INPUT,
    AutoRenewRequest,
    CancelRequest,
    CommandStatus,
    PaymentList,
    Payment,
    PayNowRequest,
    PlanList,
    PromoCodePreview,
    PurchaseRequest,
    RefundList,
    ReplacePaymentMethodRequest,
    RefundQuote,
    SubscriptionDetail,
    SubscriptionList,
    SwitchRequest,
)
from command_api.domain.problems import ProblemError
from command_api.entrypoints.routes.common import (
    Limit,
    Offset,
    command_responses,
    command_status_response,
    money,
    payment_view,
    plan_view,
    promo_preview,
    read_responses,
    refund_view,
    subscription_fields,
    subscription_view,
)
from rules.refunds import refund_amount
from schemas import (
    CancelSubscription,
    Customer,
    PayOverdueSubscription,
    PurchaseSubscription,
    ReplacePaymentMethod,
    SetAutoRenew,
    SwitchPlan,
    account_stream,
    derived_id,
)

router = APIRouter(prefix="/v1")

SubscriptionStatus = Literal["pending_payment", "active", "past_due", "canceled", "expired", "payment_failed"]


def _not_found(what: str) -> ProblemError:
    return ProblemError(404, "not-found", "Not found", f"no such {what}")


@router.get("/plans", response_model=PlanList, tags=["plans"], responses=read_responses())
async def list_plans(services: ServicesDep, principal: CurrentUser) -> PlanList:
    """The plans on sale (archived plans are not listed)."""
    now = services.clock.now()
    return PlanList(items=[plan_view(row, now) for row in await services.reads.plans()])


@router.post(
    "/subscriptions",
    status_code=202,
    response_model=CommandStatus,
    tags=["subscriptions"],
    responses=command_responses(),
)
async def purchase(body: PurchaseRequest, services: ServicesDep, principal: CurrentUser, ctx: UserCommand) -> Response:
    """Buy a plan; the outcome carries the confirmation URL where the customer pays."""
    if principal.email is None:
        raise ProblemError(403, "email-required", "Email required", "the token has no email claim; receipts need one")
    customer = Customer(email=principal.email, locale=principal.locale)  # type: ignore[arg-type]

    async def prepare(command_id: uuid.UUID) -> Prepared:
        plan = await services.reads.plan_on_sale(body.plan_id)
        if plan is None:
            raise ProblemError(
                422, "plan-not-available", "Plan not available", f"plan {body.plan_id!r} does not exist or is archived"
            )
        promo_code = body.promo_code.upper() if body.promo_code else None
        if promo_code is not None and await services.reads.promo_code(promo_code) is None:
            raise ProblemError(404, "promo-code-not-found", "Promo code not found", f"there is no promo code {promo_code!r}",
                               code="promo_code_not_found")
        payload = PurchaseSubscription(
            subscription_id=derived_id("subscription", command_id),
            plan_id=body.plan_id,
            auto_renew=body.auto_renew,
            customer=customer,
            promo_code=promo_code,
        )
        return Prepared(payload, account_stream(principal.user_id), principal.user_id)

    return await services.intake.submit(ctx, "PurchaseSubscription", body, prepare)


@router.get(
    "/promo-codes/{code}", response_model=PromoCodePreview, tags=["plans"], responses=read_responses(404)
)
async def preview_promo_code(
    code: Annotated[str, Path(pattern=PROMO_CODE_INPUT)],
    services: ServicesDep,
    principal: CurrentUser,
    plan_id: Annotated[str | None, Query(pattern=PLAN_ID_PATTERN, description="the plan to price with the code")] = None,
) -> PromoCodePreview:
    """What a promo code would take off a plan's first period now; the purchase itself decides for
    certain (a code may be used up between the two)."""
    row = await services.reads.promo_code(code.upper())
    if row is None:
        raise ProblemError(404, "promo-code-not-found", "Promo code not found", f"there is no promo code {code.upper()!r}",
                           code="promo_code_not_found")
    plan = await services.reads.plan_on_sale(plan_id) if plan_id else None
    if plan_id and plan is None:
        raise _not_found("plan")
    return promo_preview(row, plan, services.clock.now())


@router.get("/subscriptions", response_model=SubscriptionList, tags=["subscriptions"], responses=read_responses())
async def list_subscriptions(
    services: ServicesDep,
    principal: CurrentUser,
    limit: Limit = 50,
    offset: Offset = 0,
    status: Annotated[SubscriptionStatus | None, Query(description="only this status")] = None,
) -> SubscriptionList:
    """Your subscriptions, newest first."""
    rows = await services.reads.subscriptions(principal.user_id, limit=limit, offset=offset, status=status)
    return SubscriptionList(items=[subscription_view(r) for r in rows], limit=limit, offset=offset)


@router.get(
    "/subscriptions/{subscription_id}",
    response_model=SubscriptionDetail,
    tags=["subscriptions"],
    responses={**read_responses(404), 304: {"description": "`If-None-Match` matched: nothing changed (after the wait, if asked)"}},
)
async def get_subscription(
    subscription_id: uuid.UUID,
    services: ServicesDep,
    principal: CurrentUser,
    prefer: PreferHeader = None,
    if_none_match: Annotated[str | None, Header(max_length=200, description="an `ETag` from an earlier answer")] = None,
) -> Response:
    """One of your subscriptions with its payments and refunds.

    Every answer has an `ETag`. Send it back in `If-None-Match` and the answer is 304 while
    nothing changed; add `Prefer: wait=N` and the request waits up to N seconds for a change and
    answers it the moment it is projected — one request instead of a polling loop while a payment
    settles.
    """
    stream = account_stream(principal.user_id)
    wait_s = parse_prefer_wait(prefer, services.settings.api_max_wait_s) if if_none_match else None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (wait_s or 0.0)
    headers = {"Preference-Applied": f"wait={wait_s:g}"} if wait_s else {}
    while True:
        # One statement reads the body and the stream version it reflects: a change projected
        # after it moves the version past `seen`, which wakes the wait.
        row = await services.reads.subscription_detail(subscription_id, principal.user_id, stream)
        if row is None:
            raise _not_found("subscription")
        seen = row["stream_version"]
        body = SubscriptionDetail(
            **subscription_fields(row),
            payments=[payment_view(p) for p in row["payments"]],
            refunds=[refund_view(r) for r in row["refunds"]],
        ).model_dump_json().encode()
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        if not _etag_matches(if_none_match, etag):
            return Response(body, media_type="application/json", headers={**headers, "ETag": etag})
        remaining = deadline - loop.time()
        if remaining <= 0:
            return Response(status_code=304, headers={**headers, "ETag": etag})
        await services.streams.wait(stream, lambda applied, seen=seen: applied > seen, remaining)


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison against an `If-None-Match` list (`*` matches anything)."""
    if not if_none_match:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


async def _own_subscription(services: ServicesDep, subscription_id: uuid.UUID, user_id: str) -> None:
    if await services.reads.subscription(subscription_id, user_id) is None:
        raise _not_found("subscription")


@router.post(
    "/subscriptions/{subscription_id}/cancel",
    status_code=202,
    response_model=CommandStatus,
    tags=["subscriptions"],
    responses=command_responses(),
)
async def cancel_subscription(
    subscription_id: uuid.UUID, body: CancelRequest, services: ServicesDep, principal: CurrentUser, ctx: UserCommand
) -> Response:
    """Cancel now with a refund for the unused days, or at the end of the period."""

    async def prepare(command_id: uuid.UUID) -> Prepared:
        await _own_subscription(services, subscription_id, principal.user_id)
        payload = CancelSubscription(subscription_id=subscription_id, mode=body.mode)
        return Prepared(payload, account_stream(principal.user_id), principal.user_id)

    return await services.intake.submit(ctx, "CancelSubscription", body, prepare)


@router.post(
    "/subscriptions/{subscription_id}/auto-renew",
    status_code=202,
    response_model=CommandStatus,
    tags=["subscriptions"],
    responses=command_responses(),
)
async def set_auto_renew(
    subscription_id: uuid.UUID, body: AutoRenewRequest, services: ServicesDep, principal: CurrentUser, ctx: UserCommand
) -> Response:
    """Turn automatic renewal on or off. Turning it on without a saved card starts a card check
    (a small payment refunded at once): the outcome's `confirmation_url` is where the customer
    confirms it, and renewal turns on when it succeeds."""

    async def prepare(command_id: uuid.UUID) -> Prepared:
        await _own_subscription(services, subscription_id, principal.user_id)
        payload = SetAutoRenew(subscription_id=subscription_id, enabled=body.enabled)
        return Prepared(payload, account_stream(principal.user_id), principal.user_id)

    return await services.intake.submit(ctx, "SetAutoRenew", body, prepare)


@router.post(
    "/subscriptions/{subscription_id}/switch",
    status_code=202,
    response_model=CommandStatus,
    tags=["subscriptions"],
    responses=command_responses(),
)
async def switch_plan(
    subscription_id: uuid.UUID, body: SwitchRequest, services: ServicesDep, principal: CurrentUser, ctx: UserCommand
) -> Response:
    """Switch to another plan of the same product (docs/decisions/0119).

    A dearer plan is an **upgrade**, now: the charge is its price less the credit for the unused
    days of the current period (the same arithmetic as a refund), by the saved card — or, without
    one, on a payment page whose URL the outcome carries — and a new period of the new plan starts
    when it is paid. Any other plan is a **downgrade**: the renewal at the period end charges the
    new plan and moves the subscription to it. Switching to the current plan withdraws a scheduled
    downgrade. Refused with a problem: an unknown plan (404 `plan_not_found`), the current plan with
    nothing scheduled (409 `same_plan`), an archived plan or one of another product, a subscription
    that is not live or is past due (pay first), or a payment still in flight (409).
    """

    async def prepare(command_id: uuid.UUID) -> Prepared:
        await _own_subscription(services, subscription_id, principal.user_id)
        if await services.reads.plan(body.plan_id) is None:
            raise ProblemError(404, "plan-not-found", "Plan not found", f"there is no plan {body.plan_id!r}", code="plan_not_found")
        payload = SwitchPlan(subscription_id=subscription_id, plan_id=body.plan_id, return_url=body.return_url)
        return Prepared(payload, account_stream(principal.user_id), principal.user_id)

    return await services.intake.submit(ctx, "SwitchPlan", body, prepare)


@router.post(
    "/subscriptions/{subscription_id}/payment-method",
    status_code=202,
    response_model=CommandStatus,
    tags=["subscriptions"],
    responses=command_responses(),
)
async def replace_payment_method(
    subscription_id: uuid.UUID, body: ReplacePaymentMethodRequest, services: ServicesDep, principal: CurrentUser, ctx: UserCommand
) -> Response:
    """Save another card for renewals. A card check (a small payment, refunded at once) saves it:
    the outcome's `confirmation_url` is where the customer confirms it; later renewals charge the
    new card once it succeeds. Only a live (active or past-due) subscription: otherwise 409."""

    async def prepare(command_id: uuid.UUID) -> Prepared:
        sub = await services.reads.subscription(subscription_id, principal.user_id)
        if sub is None:
            raise _not_found("subscription")
        if sub["status"] not in ("active", "past_due"):
            raise ProblemError(
                409, "subscription-not-live", "Subscription not live",
                f"the subscription is {sub['status'].replace('_', ' ')}; only an active or past-due one's card can be replaced",
            )
        payload = ReplacePaymentMethod(subscription_id=subscription_id)
        return Prepared(payload, account_stream(principal.user_id), principal.user_id)

    return await services.intake.submit(ctx, "ReplacePaymentMethod", body, prepare)


@router.post(
    "/subscriptions/{subscription_id}/pay",
    status_code=202,
    response_model=CommandStatus,
    tags=["subscriptions"],
    responses=command_responses(),
)
async def pay_now(
    subscription_id: uuid.UUID, body: PayNowRequest, services: ServicesDep, principal: CurrentUser, ctx: UserCommand
) -> Response:
    """Pay a past-due subscription now: the outcome carries the payment page's URL (as a purchase's
    does). The card paid with is saved and charged for later renewals. While a payment page for
    the period is open (an earlier pay-now, or a renewal awaiting 3-D Secure) the same page is
    answered; a subscription that is not past due is a 409 (`not_past_due`)."""

    async def prepare(command_id: uuid.UUID) -> Prepared:
        sub = await services.reads.subscription(subscription_id, principal.user_id)
        if sub is None:
            raise _not_found("subscription")
        if sub["status"] != "past_due":
            raise ProblemError(
                409, "not-past-due", "Not past due", f"the subscription is {sub['status'].replace('_', ' ')}: nothing is overdue to pay",
                code="not_past_due",
            )
        payload = PayOverdueSubscription(subscription_id=subscription_id)
        return Prepared(payload, account_stream(principal.user_id), principal.user_id)

    return await services.intake.submit(ctx, "PayOverdueSubscription", body, prepare)


@router.get(
    "/subscriptions/{subscription_id}/refund-quote",
    response_model=RefundQuote,
    tags=["subscriptions"],
    responses=read_responses(404),
)
async def refund_quote(subscription_id: uuid.UUID, services: ServicesDep, principal: CurrentUser) -> RefundQuote:
    """The amount canceling with `refund_now` would return right now."""
    sub = await services.reads.subscription(subscription_id, principal.user_id)
    if sub is None:
        raise _not_found("subscription")
    now = services.clock.now()
    currency = sub["currency"]
    plan = await services.reads.plan(sub["plan_id"])
    period_days = _period_days(sub, plan)
    payment = await services.reads.payment_by_id(sub["last_payment_id"]) if sub["last_payment_id"] else None
    refundable = (
        sub["status"] in ("active", "past_due")
        and payment is not None
        and payment["status"] == "succeeded"
        and (sub["period_start"] or payment["paid_at"]) is not None
    )
    if not refundable or payment is None:
        return RefundQuote(
            subscription_id=subscription_id,
            amount=money(0, currency),
            days_used=0,
            days_in_period=period_days,
            paid=money(payment["amount_minor"] if payment else 0, currency),
            already_refunded=money(0, currency),
            refundable=False,
            quoted_at=now,
        )
    already = await services.reads.refunded_on_payment(payment["payment_id"])
    # The same inputs as the processor's decision: a purchase's period starts when it was paid, a
    # renewal's when the previous period ended (it may be charged before that).
    paid_at = (sub["period_start"] or payment["paid_at"]) if payment["purpose"] in ("renewal", "recovery") else (
        payment["paid_at"] or sub["period_start"])
    paid_minor = payment["amount_minor"]
    if sub.get("period_paid_minor") is not None and sub["period_start"] is not None:
        # A period an upgrade started: paid by the upgrade charge plus the credit carried into it.
        paid_minor, paid_at = sub["period_paid_minor"], sub["period_start"]
    quote = refund_amount(paid_minor, paid_at, period_days, now, already)
    return RefundQuote(
        subscription_id=subscription_id,
        amount=money(quote.amount_minor, payment["currency"]),
        days_used=quote.days_used,
        days_in_period=quote.days_in_period,
        paid=money(paid_minor, payment["currency"]),
        already_refunded=money(already, payment["currency"]),
        refundable=quote.amount_minor > 0,
        quoted_at=now,
    )


def _period_days(sub: dict, plan: dict | None) -> int:  # type: ignore[type-arg]
    """The paid period's length in days: the plan's period, else the subscription's own span."""
    if plan is not None and plan["period_days"]:
        return int(plan["period_days"])
    if sub["period_start"] and sub["period_end"]:
        return max(1, round((sub["period_end"] - sub["period_start"]) / timedelta(days=1)))
    return 1


@router.get("/payments", response_model=PaymentList, tags=["payments"], responses=read_responses())
async def list_payments(services: ServicesDep, principal: CurrentUser, limit: Limit = 50, offset: Offset = 0) -> PaymentList:
    """Your payments, newest first."""
    rows = await services.reads.payments(principal.user_id, limit=limit, offset=offset)
    return PaymentList(items=[payment_view(r) for r in rows], limit=limit, offset=offset)


@router.get("/payments/{payment_id}", response_model=Payment, tags=["payments"], responses=read_responses(404))
async def get_payment(payment_id: uuid.UUID, services: ServicesDep, principal: CurrentUser) -> Payment:
    """One of your payments."""
    row = await services.reads.payment(payment_id, principal.user_id)
    if row is None:
        raise _not_found("payment")
    return payment_view(row)


@router.get("/refunds", response_model=RefundList, tags=["payments"], responses=read_responses())
async def list_refunds(services: ServicesDep, principal: CurrentUser, limit: Limit = 50, offset: Offset = 0) -> RefundList:
    """Your refunds, newest first."""
    rows = await services.reads.refunds(principal.user_id, limit=limit, offset=offset)
    return RefundList(items=[refund_view(r) for r in rows], limit=limit, offset=offset)


@router.get("/commands/{command_id}", response_model=CommandStatus, tags=["commands"], responses=read_responses(404))
async def get_command(command_id: uuid.UUID, services: ServicesDep, principal: CurrentUser, prefer: PreferHeader = None) -> Response:
    """Where one of your commands is: accepted, processing, succeeded, rejected or failed.

    Add `Prefer: wait=N` (N ≤ 10) and a command that has not ended is answered the moment it
    ends, or after N seconds with where it is then — instead of asking again and again.
    """
    return await command_status_response(services, command_id, principal.user_id, prefer)
