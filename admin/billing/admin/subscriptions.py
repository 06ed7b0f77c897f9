"""Subscriptions: their period, payments, refunds and commands, with the operator actions on one subscription."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from admin.billing import forms, views
from admin.billing.admin.base import PlanFilter, ReadOnlyAdmin
from admin.billing.display import (
    as_uuid,
    change_url,
    changelist_url,
    fmt_dt,
    link,
    payments_table,
    refunds_table,
    short,
    status_badge,
)
from admin.billing.models import Payment, Plan, Refund, Subscription
from admin.billing.money import format_money


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    list_display = ("sub_id", "account", "email", "plan_name", "status_display", "trial", "auto_renew",
                    "cancel_at_period_end", "period_end_display", "paid", "refunded", "created")
    list_filter = ("status", PlanFilter, "trial", "auto_renew", "cancel_at_period_end", "period_end", "created_at", "promo_code")
    search_fields = ("user_id", "email")
    search_help_text = "User id, email, subscription id, payment id or YooKassa payment id"
    date_hierarchy = "created_at"
    fieldsets = (
        (None, {"fields": ("subscription_id", "account", "email", "locale", "plan_link", "status_display",
                           "status_reason")}),
        ("Period", {"fields": ("period_start_display", "period_end_display", "trial", "auto_renew", "cancel_at_period_end",
                               "renewal_attempt", "next_retry_display", "canceled_display", "expired_display")}),
        ("Money", {"fields": ("price", "upcoming_price", "promo", "paid", "refunded", "refundable", "payment_method_title")}),
        ("Related", {"fields": ("payments", "refunds", "timeline")}),
        ("Record", {"fields": ("created", "updated")}),
    )
    readonly_fields = tuple(f for _, options in fieldsets for f in options["fields"])
    change_form_template = "admin/billing/subscription/change_form.html"
    change_list_template = "admin/billing/subscription/change_list.html"

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(user_id=term) | Q(email__icontains=term) | Q(
            subscription_id__in=Payment.objects.filter(provider_payment_id=term).values("subscription_id")
        )
        if (uid := as_uuid(term)) is not None:
            match |= Q(subscription_id=uid) | Q(last_payment_id=uid) | Q(
                subscription_id__in=Payment.objects.filter(payment_id=uid).values("subscription_id")
            )
        return queryset.filter(match), False

    @admin.display(description="subscription", ordering="subscription_id")
    def sub_id(self, obj: Subscription) -> str:
        return short(obj.subscription_id)

    @admin.display(description="account", ordering="user_id")
    def account(self, obj: Subscription) -> SafeString:
        return link(change_url("account", obj.user_id), obj.user_id)

    @admin.display(description="plan", ordering="plan_id")
    def plan_link(self, obj: Subscription) -> SafeString:
        return link(change_url("plan", obj.plan_id), f"{obj.plan_name} ({obj.plan_id})")

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: Subscription) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="period start", ordering="period_start")
    def period_start_display(self, obj: Subscription) -> str:
        return fmt_dt(obj.period_start)

    @admin.display(description="period end", ordering="period_end")
    def period_end_display(self, obj: Subscription) -> SafeString:
        return format_html('<span class="billing-period-end">{}</span>', fmt_dt(obj.period_end))

    @admin.display(description="next retry")
    def next_retry_display(self, obj: Subscription) -> str:
        return fmt_dt(obj.next_retry_at)

    @admin.display(description="canceled at")
    def canceled_display(self, obj: Subscription) -> str:
        return fmt_dt(obj.canceled_at)

    @admin.display(description="expired at")
    def expired_display(self, obj: Subscription) -> str:
        return fmt_dt(obj.expired_at)

    @admin.display(description="price", ordering="price_minor")
    def price(self, obj: Subscription) -> str:
        return format_money(obj.price_minor, obj.currency)

    @admin.display(description="promo code")
    def promo(self, obj: Subscription) -> SafeString | str:
        """The code, the latest charge's discount and the discounted periods still to come."""
        if not obj.promo_code:
            return "—"
        return format_html("{} — {} off the latest charge, {} discounted period(s) left",
                           link(change_url("promocode", obj.promo_code), obj.promo_code),
                           format_money(obj.discount_minor, obj.currency), obj.promo_periods_left)

    @admin.display(description="announced price")
    def upcoming_price(self, obj: Subscription) -> str:
        """A plan price change the subscriber was emailed about (PriceChangeAnnounced)."""
        if obj.upcoming_price_minor is None:
            return "—"
        return f"{format_money(obj.upcoming_price_minor, obj.currency)} from the renewal on {fmt_dt(obj.upcoming_price_at)}"

    @admin.display(description="paid", ordering="amount_paid_minor")
    def paid(self, obj: Subscription) -> str:
        return format_money(obj.amount_paid_minor, obj.currency)

    @admin.display(description="refunded", ordering="amount_refunded_minor")
    def refunded(self, obj: Subscription) -> str:
        return format_money(obj.amount_refunded_minor, obj.currency)

    @admin.display(description="refundable (paid − refunded)")
    def refundable(self, obj: Subscription) -> str:
        return format_money(obj.refundable_minor, obj.currency)

    @admin.display(description="payments")
    def payments(self, obj: Subscription) -> SafeString:
        return payments_table(Payment.objects.filter(subscription_id=obj.subscription_id).order_by("-created_at"))

    @admin.display(description="refunds")
    def refunds(self, obj: Subscription) -> SafeString:
        return refunds_table(Refund.objects.filter(subscription_id=obj.subscription_id).order_by("-created_at"))

    @admin.display(description="account timeline")
    def timeline(self, obj: Subscription) -> SafeString:
        return link(reverse("admin:billing_account_timeline", args=[quote(obj.user_id)]), "every event of the account")

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Subscription) -> str:
        return fmt_dt(obj.created_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: Subscription) -> str:
        return fmt_dt(obj.updated_at)

    def get_urls(self) -> list[Any]:
        return [
            self.admin_url("grant", self.grant_view, "grant/"),
            self.admin_url("extend", self.extend_view, "<path:object_id>/extend/"),
            self.admin_url("cancel", self.cancel_view, "<path:object_id>/cancel/"),
            self.admin_url("refund", self.refund_view, "<path:object_id>/refund/"),
            self.admin_url("autorenew", self.auto_renew_view, "<path:object_id>/auto-renew/"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {**(extra_context or {}), "can_act": self.can_act(request)})

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().change_view(request, object_id, form_url,
                                   {**(extra_context or {}), "can_act": self.can_act(request)})

    def _subscription(self, object_id: str) -> Subscription:
        uid = as_uuid(object_id)
        if uid is None:
            from django.http import Http404

            raise Http404("not a subscription id")
        return get_object_or_404(Subscription, subscription_id=uid)

    @staticmethod
    def _summary(sub: Subscription) -> list[tuple[str, Any]]:
        return [
            ("subscription", str(sub.subscription_id)), ("account", f"{sub.user_id} <{sub.email or '—'}>"),
            ("plan", f"{sub.plan_name} ({sub.plan_id})"), ("status", sub.status),
            ("period", f"{fmt_dt(sub.period_start)} → {fmt_dt(sub.period_end)}"),
            ("auto-renew", "on" if sub.auto_renew else "off"),
            ("paid", format_money(sub.amount_paid_minor, sub.currency)),
            ("refunded", format_money(sub.amount_refunded_minor, sub.currency)),
            ("refundable", format_money(sub.refundable_minor, sub.currency)),
        ]

    def _action(self, request: HttpRequest, object_id: str, title: str, form_class: Any, suffix: str,
                **form_kwargs: Any) -> HttpResponse:
        sub = self._subscription(object_id)

        def make_form(**kwargs: Any) -> forms.OperatorCommandForm:
            return form_class(**kwargs, **form_kwargs)

        return views.operator_action(
            self, request, title=title, make_form=make_form,
            api_path=f"/subscriptions/{sub.subscription_id}/{suffix}",
            back_url=change_url("subscription", sub.subscription_id), obj=sub, summary=self._summary(sub),
        )

    def extend_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._action(request, object_id, "Extend the subscription", forms.ExtendForm, "extend")

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._action(request, object_id, "Cancel the subscription", forms.CancelForm, "cancel")

    def auto_renew_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        sub = self._subscription(object_id)
        return self._action(request, object_id, "Turn auto-renewal on or off", forms.AutoRenewForm, "auto-renew",
                            initial={"enabled": "0" if sub.auto_renew else "1"})

    def refund_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        sub = self._subscription(object_id)
        return self._action(request, object_id, "Refund an amount", forms.RefundForm, "refund",
                            refundable_minor=sub.refundable_minor, currency=sub.currency)

    def grant_view(self, request: HttpRequest) -> HttpResponse:
        plans = [(p.plan_id, f"{p.name} — {p.price} / {p.period_days} days")
                 for p in Plan.objects.filter(archived=False).order_by("name")]
        initial = {k: request.GET[k] for k in ("user_id", "email", "locale", "plan_id") if request.GET.get(k)}

        def make_form(**kwargs: Any) -> forms.OperatorCommandForm:
            return forms.GrantForm(**kwargs, plans=plans, initial=initial)

        user_id = initial.get("user_id")
        back = change_url("account", user_id) if user_id else changelist_url("subscription")
        return views.operator_action(
            self, request, title="Grant a plan for free", make_form=make_form,
            api_path="/subscriptions/grant", back_url=back,
        )
