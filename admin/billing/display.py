"""How the admin shows things: money, dates in its time zone, status badges, links between pages, small related tables."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from django.contrib.admin.utils import quote
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from admin.billing.models import Command, Payment, Refund, Subscription
from admin.billing.money import format_money

STATUS_COLOURS = {
    "active": "#1a7f37", "succeeded": "#1a7f37",
    "pending_payment": "#9a6700", "pending": "#9a6700", "processing": "#9a6700", "accepted": "#9a6700",
    "requested": "#9a6700", "created": "#9a6700", "past_due": "#bc4c00", "unknown": "#bc4c00",
    "canceled": "#57606a", "expired": "#57606a",
    "payment_failed": "#cf222e", "rejected": "#cf222e", "failed": "#cf222e",
    "open": "#bc4c00", "recorded": "#1a7f37", "resolved": "#57606a", "running": "#9a6700", "done": "#1a7f37",
}

def fmt_dt(value: Any) -> str:
    """A timestamp in the admin's time zone: `2026-12-26 15:04 MSK`."""
    if value is None:
        return "—"
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M %Z")

def status_badge(status: str | None) -> SafeString:
    colour = STATUS_COLOURS.get(status or "", "#57606a")
    return format_html('<strong class="billing-status" style="color:{}">{}</strong>', colour, status or "—")

def change_url(model: str, pk: Any) -> str:
    return reverse(f"admin:billing_{model}_change", args=[quote(str(pk))])

def changelist_url(model: str, **params: Any) -> str:
    url = reverse(f"admin:billing_{model}_changelist")
    return f"{url}?{urlencode(params)}" if params else url

def link(url: str, text: Any) -> SafeString:
    return format_html('<a href="{}">{}</a>', url, text)

def short(value: Any) -> str:
    text = str(value)
    return text[:8] if len(text) == 36 else text

def as_uuid(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term.strip())
    except ValueError:
        return None

def related_table(headers: list[str], rows: list[list[Any]], empty: str) -> SafeString:
    if not rows:
        return format_html("<em>{}</em>", empty)
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows)
    )
    return format_html('<table class="billing-related"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', head, body)

def payments_table(payments: QuerySet[Payment]) -> SafeString:
    return related_table(
        ["payment", "purpose", "status", "amount", "provider id", "paid at", "reason"],
        [
            [link(change_url("payment", p.payment_id), short(p.payment_id)), p.purpose, status_badge(p.status),
             format_money(p.amount_minor, p.currency), p.provider_payment_id or "—", fmt_dt(p.paid_at),
             p.reason or ""]
            for p in payments
        ],
        "no payments",
    )

def refunds_table(refunds: QuerySet[Refund]) -> SafeString:
    return related_table(
        ["refund", "status", "amount", "days used", "payment", "created", "reason"],
        [
            [link(change_url("refund", r.refund_id), short(r.refund_id)), status_badge(r.status),
             format_money(r.amount_minor, r.currency), r.days_used if r.days_used is not None else "—",
             link(change_url("payment", r.payment_id), short(r.payment_id)), fmt_dt(r.created_at), r.reason or ""]
            for r in refunds
        ],
        "no refunds",
    )

def subscriptions_table(subscriptions: QuerySet[Subscription]) -> SafeString:
    return related_table(
        ["subscription", "plan", "status", "auto-renew", "period end", "paid", "refunded"],
        [
            [link(change_url("subscription", s.subscription_id), short(s.subscription_id)), s.plan_name,
             status_badge(s.status), "yes" if s.auto_renew else "no", fmt_dt(s.period_end),
             format_money(s.amount_paid_minor, s.currency), format_money(s.amount_refunded_minor, s.currency)]
            for s in subscriptions
        ],
        "no subscriptions",
    )

def commands_table(commands: QuerySet[Command]) -> SafeString:
    return related_table(
        ["command", "type", "status", "actor", "reason", "created"],
        [
            [link(change_url("command", c.command_id), short(c.command_id)), c.command_type, status_badge(c.status),
             f"{c.actor_kind or '?'}: {c.actor_id or '?'}", c.reason or "", fmt_dt(c.created_at)]
            for c in commands
        ],
        "no commands",
    )
