"""Payments and refunds as YooKassa and the processor saw them, linked to their subscription and account."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString

from admin.billing.admin.base import ReadOnlyAdmin
from admin.billing.display import (
    as_uuid,
    change_url,
    fmt_dt,
    link,
    payment_status,
    receipt_table,
    refunds_table,
    short,
    status_badge,
)
from admin.billing.models import Payment, Refund
from admin.billing.money import format_money


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ("pay_id", "account", "subscription", "purpose", "status_display", "amount", "provider_payment_id",
                    "paid", "created")
    list_filter = ("status", "purpose", "receipt_registration", "paid_at", "created_at")
    search_fields = ("user_id", "provider_payment_id")
    search_help_text = "User id, YooKassa payment id, payment id or subscription id"
    date_hierarchy = "created_at"
    fields = ("payment_id", "account", "subscription", "provider_payment_id", "purpose", "status_display", "amount",
              "reason", "confirmation_url", "paid", "created", "updated", "receipt_display", "registration", "refunds")
    readonly_fields = fields

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(user_id=term) | Q(provider_payment_id=term)
        if (uid := as_uuid(term)) is not None:
            match |= Q(payment_id=uid) | Q(subscription_id=uid)
        return queryset.filter(match), False

    @admin.display(description="payment", ordering="payment_id")
    def pay_id(self, obj: Payment) -> str:
        return short(obj.payment_id)

    @admin.display(description="account", ordering="user_id")
    def account(self, obj: Payment) -> SafeString:
        return link(change_url("account", obj.user_id), obj.user_id)

    @admin.display(description="subscription")
    def subscription(self, obj: Payment) -> SafeString:
        return link(change_url("subscription", obj.subscription_id), short(obj.subscription_id))

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: Payment) -> SafeString:
        return payment_status(obj)

    @admin.display(description="amount", ordering="amount_minor")
    def amount(self, obj: Payment) -> str:
        return format_money(obj.amount_minor, obj.currency)

    @admin.display(description="paid at", ordering="paid_at")
    def paid(self, obj: Payment) -> str:
        return fmt_dt(obj.paid_at)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Payment) -> str:
        return fmt_dt(obj.created_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: Payment) -> str:
        return fmt_dt(obj.updated_at)

    @admin.display(description="receipt (54-FZ)")
    def receipt_display(self, obj: Payment) -> SafeString:
        return receipt_table(obj.receipt)

    @admin.display(description="receipt registration", ordering="receipt_registration")
    def registration(self, obj: Payment) -> SafeString:
        return status_badge(obj.receipt_registration)

    @admin.display(description="refunds")
    def refunds(self, obj: Payment) -> SafeString:
        return refunds_table(Refund.objects.filter(payment_id=obj.payment_id).order_by("-created_at"))

@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ("ref_id", "account", "subscription", "payment", "status_display", "amount", "days_used",
                    "provider_refund_id", "created")
    list_filter = ("status", "receipt_registration", "created_at", "updated_at")
    search_fields = ("user_id", "provider_refund_id")
    search_help_text = "User id, YooKassa refund id, or a refund, payment or subscription id"
    date_hierarchy = "created_at"
    fields = ("refund_id", "account", "subscription", "payment", "provider_refund_id", "status_display", "amount",
              "days_used", "reason", "created", "updated", "receipt_display", "registration")
    readonly_fields = fields

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(user_id=term) | Q(provider_refund_id=term)
        if (uid := as_uuid(term)) is not None:
            match |= Q(refund_id=uid) | Q(payment_id=uid) | Q(subscription_id=uid)
        return queryset.filter(match), False

    @admin.display(description="refund", ordering="refund_id")
    def ref_id(self, obj: Refund) -> str:
        return short(obj.refund_id)

    @admin.display(description="account", ordering="user_id")
    def account(self, obj: Refund) -> SafeString:
        return link(change_url("account", obj.user_id), obj.user_id)

    @admin.display(description="subscription")
    def subscription(self, obj: Refund) -> SafeString:
        return link(change_url("subscription", obj.subscription_id), short(obj.subscription_id))

    @admin.display(description="payment")
    def payment(self, obj: Refund) -> SafeString:
        return link(change_url("payment", obj.payment_id), short(obj.payment_id))

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: Refund) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="amount", ordering="amount_minor")
    def amount(self, obj: Refund) -> str:
        return format_money(obj.amount_minor, obj.currency)

    @admin.display(description="receipt (54-FZ)")
    def receipt_display(self, obj: Refund) -> SafeString:
        return receipt_table(obj.receipt)

    @admin.display(description="receipt registration", ordering="receipt_registration")
    def registration(self, obj: Refund) -> SafeString:
        return status_badge(obj.receipt_registration)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Refund) -> str:
        return fmt_dt(obj.created_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: Refund) -> str:
        return fmt_dt(obj.updated_at)
