"""`POST /v1/webhooks/yookassa`: a provider notification becomes a SyncPayment / SyncRefund command.

The command id is derived from (object id, event, time window), so YooKassa's repeated deliveries
of one notification — or a flood of forged ones with made-up statuses — collapse into one command
per window, and a repeat is not even published again (`RecentSyncs`). The answer is 200 as soon as Kafka has the command
(YooKassa retries anything else for 24 hours); a notification we cannot route is acknowledged and
ignored, so it is not retried forever.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from command_api.entrypoints.deps import ServicesDep
from command_api.entrypoints.models import WebhookAck
from command_api.domain.problems import ProblemError
from command_api.entrypoints.problems import problem_responses
from command_api.domain.webhooks import (
    BadNotification,
    Notice,
    client_address,
    is_trusted,
    parse_notification,
    sync_command_id,
)
from infra.logging import get_logger
from schemas import Actor, SyncPayment, SyncRefund, account_stream

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
log = get_logger(__name__)
PROVIDER = Actor(kind="provider", id="yookassa")

_NOTIFICATION_SCHEMA = {
    "type": "object",
    "required": ["type", "event", "object"],
    "properties": {
        "type": {"type": "string", "enum": ["notification"]},
        "event": {"type": "string", "examples": ["payment.succeeded"]},
        "object": {"type": "object", "description": "the payment or refund as YooKassa describes it"},
    },
}
_NOTIFICATION_EXAMPLE = {
    "type": "notification",
    "event": "payment.succeeded",
    "object": {
        "id": "2d4b8a1c-000f-5000-9000-1a2b3c4d5e6f",
        "status": "succeeded",
        "paid": True,
        "amount": {"value": "299.00", "currency": "RUB"},
        "metadata": {"user_id": "user-42"},
        "created_at": "2026-11-26T10:00:00.000Z",
    },
}


@router.post(
    "/yookassa",
    response_model=WebhookAck,
    responses=problem_responses(400, 403, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _NOTIFICATION_SCHEMA, "example": _NOTIFICATION_EXAMPLE}},
        }
    },
)
async def yookassa_notification(request: Request, services: ServicesDep) -> WebhookAck:
    """A YooKassa notification (from YooKassa's networks only); the processor re-reads the object."""
    settings = services.settings
    peer = request.client.host if request.client else None
    # Every X-Forwarded-For line: a proxy may append its own line after a forged one.
    forwarded_for = ",".join(request.headers.getlist("x-forwarded-for"))
    address = client_address(peer, forwarded_for, settings.trusted_proxy_networks, settings.api_trusted_proxy_hops)
    if not is_trusted(address, settings.trusted_webhook_networks):
        services.metrics.webhooks.labels("untrusted").inc()
        log.warning("webhook_untrusted_sender", address=address, peer=peer)
        raise ProblemError(403, "untrusted-sender", "Forbidden", "notifications are accepted only from YooKassa's networks")

    try:
        notice = parse_notification(await request.body())
    except BadNotification as exc:
        services.metrics.webhooks.labels("bad").inc()
        raise ProblemError(400, "bad-notification", "Bad notification", str(exc)) from None
    if notice is None:
        services.metrics.webhooks.labels("ignored").inc()
        return WebhookAck(status="ignored")

    user_id, internal_id = await _route(services, notice)
    if user_id is None:
        services.metrics.webhooks.labels("unroutable").inc()
        log.info("webhook_unroutable", notification_event=notice.event, object_id=notice.object_id)
        return WebhookAck(status="ignored")

    command_id = sync_command_id(notice, services.clock.now().timestamp(), settings.api_webhook_sync_window_s)
    payload: SyncPayment | SyncRefund
    if notice.kind == "payment":
        payload = SyncPayment(payment_id=internal_id, provider_payment_id=notice.object_id, hint_status=notice.status)
    else:
        payload = SyncRefund(refund_id=internal_id, provider_refund_id=notice.object_id, hint_status=notice.status)
    published = await services.recent_syncs.publish_once(
        command_id,
        lambda: services.intake.publish(
            payload,
            command_id=command_id,
            stream_id=account_stream(user_id),
            partition_key=user_id,
            actor=PROVIDER,
            correlation_id=request.state.request_id,
        ),
    )
    services.metrics.webhooks.labels("accepted" if published else "repeated").inc()
    return WebhookAck(status="accepted", command_id=command_id)


async def _route(services: ServicesDep, notice: Notice) -> tuple[str | None, uuid.UUID | None]:
    """(user id, our own payment/refund id): our read model first, then the notification's metadata.

    Our own record wins: a body claiming another user only sends a sync to *that* claimed account,
    where the processor finds no such payment and changes nothing.
    """
    if notice.kind == "payment":
        row = await services.reads.payment_by_provider_id(notice.object_id)
        if row is not None:
            return str(row["user_id"]), row["payment_id"]
    else:
        row = await services.reads.refund_by_provider_id(notice.object_id)
        if row is not None:
            return str(row["user_id"]), row["refund_id"]
        if notice.payment_object_id is not None:
            payment = await services.reads.payment_by_provider_id(notice.payment_object_id)
            if payment is not None:
                return str(payment["user_id"]), None
    return notice.user_id, None
