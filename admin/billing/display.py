"""How the admin shows things: money, dates in its time zone, status badges, links between pages, small related tables."""

from __future__ import annotations

import uuid
from decimal import Decimal
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

def payment_status(payment: Payment) -> SafeString:
    """The payment's status; a renewal still pending with a payment page waits for the customer's
    3-D Secure confirmation (emailed to them), which an operator should see at a glance."""
    badge = status_badge(payment.status)
    if payment.purpose == "renewal" and payment.status == "pending" and payment.confirmation_url:
        return format_html('{} <span class="billing-3ds">· awaiting 3-D Secure</span>', badge)
    return badge

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

VAT_CODES = {
    1: "no VAT", 2: "VAT 0%", 3: "VAT 10%", 4: "VAT 20%", 5: "VAT 10/110", 6: "VAT 20/120", 7: "VAT 5%", 8: "VAT 7%",
    9: "VAT 5/105", 10: "VAT 7/107", 11: "VAT 22%", 12: "VAT 22/122",
}
TAX_SYSTEMS = {1: "general (ОСН)", 2: "simplified, income (УСН)", 3: "simplified, income − expenses", 4: "ЕНВД", 5: "ЕСХН", 6: "patent"}


def vat_label(code: int | None) -> str:
    return f"{code} — {VAT_CODES.get(code, '?')}" if code else "processor default"


def receipt_table(receipt: Any) -> SafeString:
    """The 54-FZ receipt recorded in the intent event, as sent to YooKassa."""
    if isinstance(receipt, str):  # JSONB may come back as text from a raw cursor
        import json

        receipt = json.loads(receipt)
    if not receipt:
        return format_html("<em>{}</em>", "not recorded (sent before receipts were: one service item, VAT code 1, full payment)")
    rows = [
        [item["description"], item["quantity"], format_money(int(Decimal(item["amount"]["amount"]) * 100), item["amount"]["currency"]),
         vat_label(item["vat_code"]), item["payment_subject"], item["payment_mode"]]
        for item in receipt.get("items", [])
    ]
    table = related_table(["item", "quantity", "amount", "VAT", "payment subject", "payment mode"], rows, "no items")
    tax = receipt.get("tax_system_code")
    return format_html(
        "{}<div>customer: {} · tax system: {}</div>", table, receipt.get("email") or "—",
        f"{tax} — {TAX_SYSTEMS.get(tax, '?')}" if tax else "not sent",
    )


def payments_table(payments: QuerySet[Payment]) -> SafeString:
    return related_table(
        ["payment", "purpose", "status", "amount", "provider id", "paid at", "reason"],
        [
            [link(change_url("payment", p.payment_id), short(p.payment_id)), p.purpose, payment_status(p),
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
