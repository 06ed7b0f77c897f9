"""YooKassa notifications: who may send them, and what we take from them (only routing hints).

A notification has no signature, so two rules make it safe:
1. it must come from YooKassa's published networks (configurable; local runs add 127.0.0.1/32),
   judged on the TCP peer, or on X-Forwarded-For (every header line) only as far as the
   configured proxies vouch for it;
2. its body is never trusted: it only tells us WHICH payment or refund to re-read. The processor
   re-reads the object from YooKassa (SyncPayment / SyncRefund) before anything changes.

And because anyone on those networks can send as many as they like, the commands one object can
cause are bounded: one per (object, event, time window), published once per window.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from yookassa.domain.notification.webhook_notification import WebhookNotificationFactory

from command_api.domain.auth import USER_ID_PATTERN
from command_api.config import Network
from schemas import derived_id

MAX_BODY_BYTES = 64 * 1024
PAYMENT_EVENTS = frozenset({"payment.succeeded", "payment.waiting_for_capture", "payment.canceled"})
REFUND_EVENTS = frozenset({"refund.succeeded", "refund.canceled"})
_PROVIDER_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_STATUS = re.compile(r"^[a-z_]{1,40}$")
_EVENT = re.compile(r"^[a-z_]{1,40}\.[a-z_]{1,40}$")
_USER_ID = re.compile(USER_ID_PATTERN)


class BadNotification(ValueError):
    """The body is not a YooKassa notification we can read."""


@dataclass(frozen=True, slots=True)
class Notice:
    """What a notification claims, reduced to routing hints."""

    kind: Literal["payment", "refund"]
    event: str
    object_id: str  # YooKassa's payment or refund id
    status: str | None
    user_id: str | None  # metadata.user_id as the notification claims it
    payment_object_id: str | None = None  # a refund's payment


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: tuple[Network, ...], trusted_hops: int = 0
) -> str | None:
    """The address to judge: the peer, or the hop our own proxies vouch for; None when none can be named.

    `forwarded_for` is every X-Forwarded-For line joined with commas: a proxy that appends its own
    line instead of extending the client's leaves the forged part on the *first* line. With no proxy
    configured the header is ignored. With `trusted_proxies`, the peer must be one of them and the
    chain is walked right to left past them (like uvicorn's forwarded-allow-ips). With
    `trusted_hops` = N, the N proxies each appended what they saw, so the sender is the N-th entry
    from the right; a shorter chain did not come through them.
    """
    if peer is None:
        return None
    if not trusted_proxies and not trusted_hops:
        return peer
    if trusted_proxies and not _in(peer, trusted_proxies):
        return peer  # not through our proxy: its header means nothing
    hops = [hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()]
    if trusted_hops:
        return hops[-trusted_hops] if len(hops) >= trusted_hops else None
    if not hops:
        return peer
    for hop in reversed(hops):
        if not _in(hop, trusted_proxies):
            return hop
    return hops[0]


def is_trusted(address: str | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and _in(address, networks)


def _in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def parse_notification(raw: bytes) -> Notice | None:
    """A Notice, None for a well-formed notification we do not act on, or BadNotification."""
    if len(raw) > MAX_BODY_BYTES:
        raise BadNotification("body too large")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadNotification(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("type") != "notification":
        raise BadNotification("not a YooKassa notification (type must be 'notification')")
    event = data.get("event")
    if not isinstance(event, str) or not _EVENT.match(event):
        raise BadNotification("event must be a string such as 'payment.succeeded'")
    obj = data.get("object")
    if not isinstance(obj, dict) or not obj:
        raise BadNotification("object must be a non-empty JSON object")
    if event not in PAYMENT_EVENTS and event not in REFUND_EVENTS:
        return None  # payouts, deals, saved methods: nothing of ours
    try:
        # The SDK's parser is the reference for the shape; it raises assorted errors on bad input.
        notification = WebhookNotificationFactory().create(data)
        parsed: Any = notification.object
        object_id, status, metadata = parsed.id, parsed.status, parsed.metadata
        payment_object_id = getattr(parsed, "payment_id", None) if event in REFUND_EVENTS else None
    except Exception as exc:  # noqa: BLE001 - anything the SDK cannot read is a bad body, never a 500
        raise BadNotification(f"unreadable notification object: {type(exc).__name__}") from None
    if not isinstance(object_id, str) or not _PROVIDER_ID.match(object_id):
        raise BadNotification("object.id is not a YooKassa id")
    if status is not None and (not isinstance(status, str) or not _STATUS.match(status)):
        raise BadNotification("object.status is not a status")
    if payment_object_id is not None and (not isinstance(payment_object_id, str) or not _PROVIDER_ID.match(payment_object_id)):
        raise BadNotification("object.payment_id is not a YooKassa id")
    user_id = None
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise BadNotification("object.metadata must be an object")
        claimed = metadata.get("user_id")
        if claimed is not None:
            if not isinstance(claimed, str) or not _USER_ID.match(claimed):
                raise BadNotification("object.metadata.user_id is not a user id")
            user_id = claimed
    return Notice(
        kind="refund" if event in REFUND_EVENTS else "payment",
        event=event,
        object_id=object_id,
        status=status,
        user_id=user_id,
        payment_object_id=payment_object_id,
    )


def sync_command_id(notice: Notice, now_s: float, window_s: float) -> uuid.UUID:
    """The SyncPayment/SyncRefund command id: one per (object, event, time window).

    The claimed status is left out on purpose: it is free text a sender chooses, so with it in the
    id every made-up status would be another command the processor has to run and end. Repeats
    within a window collapse; a later one (YooKassa retries for a day) asks the processor again.
    """
    return derived_id("command", "yookassa", notice.object_id, notice.event, str(int(now_s // window_s)))
