"""Admin pages over the read models and the event store: everything read-only.

Nobody adds, changes or deletes a read-model row here (the projector alone writes them); the
buttons on a subscription, account or plan lead to the operator actions in views.py, which
issue commands. Money is shown as money, dates in the admin's time zone, and every page links
subscription ↔ payments ↔ refunds ↔ account ↔ timeline.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from admin.billing import forms, views
from admin.billing.models import Account, Command, Payment, Plan, Refund, StoredEvent, Subscription
from admin.billing.money import format_money

admin.site.site_header = "Billing administration"
admin.site.site_title = "Billing admin"
admin.site.index_title = "Subscriptions, payments and commands"
admin.site.site_url = None  # there is no public site: / redirects to the admin

STATUS_COLOURS = {
    "active": "#1a7f37", "succeeded": "#1a7f37",
    "pending_payment": "#9a6700", "pending": "#9a6700", "processing": "#9a6700", "accepted": "#9a6700",
    "requested": "#9a6700", "created": "#9a6700", "past_due": "#bc4c00", "unknown": "#bc4c00",
    "canceled": "#57606a", "expired": "#57606a",
    "payment_failed": "#cf222e", "rejected": "#cf222e", "failed": "#cf222e",
}


# ---------------------------------------------------------------- display helpers

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


# ---------------------------------------------------------------- base classes and filters

class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only: the read models belong to the projector, the event store to the processor."""

    actions = None
    list_per_page = 50
    show_full_result_count = False  # no COUNT(*) over the whole table on every page

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def can_act(self, request: HttpRequest) -> bool:
        return request.user.has_perm(views.ACT_PERMISSION)

    def admin_url(self, name: str, view: Any, route: str) -> Any:
        return path(route, self.admin_site.admin_view(view), name=f"billing_{self.model._meta.model_name}_{name}")


class PlanFilter(admin.SimpleListFilter):
    title = "plan"
    parameter_name = "plan_id"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(p.plan_id, f"{p.name} ({p.plan_id})") for p in Plan.objects.order_by("name")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(plan_id=self.value()) if self.value() else queryset


class ActorKindFilter(admin.SimpleListFilter):
    title = "actor"
    parameter_name = "actor"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("user", "user"), ("admin", "operator"), ("system", "system"), ("provider", "provider")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if not self.value():
            return queryset
        if queryset.model is StoredEvent:
            return queryset.filter(metadata__actor__kind=self.value())
        return queryset.filter(actor_kind=self.value())


# ---------------------------------------------------------------- plans

@admin.register(Plan)
class PlanAdmin(ReadOnlyAdmin):
    list_display = ("plan_id", "name", "price_display", "period_days", "archived", "subscribers", "updated")
    list_filter = ("archived", "period_days")
    search_fields = ("plan_id", "name")
    ordering = ("archived", "plan_id")
    fields = ("plan_id", "name", "price_display", "period_days", "description", "archived", "created", "updated",
              "subscriptions_link")
    readonly_fields = fields
    change_list_template = "admin/billing/plan/change_list.html"
    change_form_template = "admin/billing/plan/change_form.html"

    @admin.display(description="price", ordering="price_minor")
    def price_display(self, obj: Plan) -> str:
        return format_money(obj.price_minor, obj.currency)

    @admin.display(description="subscriptions")
    def subscribers(self, obj: Plan) -> SafeString:
        return link(changelist_url("subscription", plan_id=obj.plan_id), "subscriptions")

    @admin.display(description="subscriptions")
    def subscriptions_link(self, obj: Plan) -> SafeString:
        return self.subscribers(obj)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Plan) -> str:
        return fmt_dt(obj.created_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: Plan) -> str:
        return fmt_dt(obj.updated_at)

    def get_urls(self) -> list[Any]:
        return [
            self.admin_url("create", self.create_view, "create/"),
            self.admin_url("archive", self.archive_view, "<path:object_id>/archive/"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {**(extra_context or {}), "can_act": self.can_act(request)})

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().change_view(request, object_id, form_url,
                                   {**(extra_context or {}), "can_act": self.can_act(request)})

    def create_view(self, request: HttpRequest) -> HttpResponse:
        return views.operator_action(
            self, request, title="Create a plan", make_form=forms.CreatePlanForm, api_path="/plans",
            back_url=changelist_url("plan"),
        )

    def archive_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        plan = get_object_or_404(Plan, plan_id=object_id)
        return views.operator_action(
            self, request, title=f"Archive plan {plan.plan_id}", make_form=forms.ArchivePlanForm,
            api_path=f"/plans/{plan.plan_id}/archive", back_url=change_url("plan", plan.plan_id), obj=plan,
            summary=[("plan", str(plan)), ("price", plan.price), ("period", f"{plan.period_days} days"),
                     ("archived", "yes" if plan.archived else "no")],
        )


# ---------------------------------------------------------------- subscriptions

@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    list_display = ("sub_id", "account", "email", "plan_name", "status_display", "auto_renew",
                    "cancel_at_period_end", "period_end_display", "paid", "refunded", "created")
    list_filter = ("status", PlanFilter, "auto_renew", "cancel_at_period_end", "period_end", "created_at")
    search_fields = ("user_id", "email")
    search_help_text = "User id, email, subscription id, payment id or YooKassa payment id"
    date_hierarchy = "created_at"
    fieldsets = (
        (None, {"fields": ("subscription_id", "account", "email", "locale", "plan_link", "status_display",
                           "status_reason")}),
        ("Period", {"fields": ("period_start_display", "period_end_display", "auto_renew", "cancel_at_period_end",
                               "renewal_attempt", "next_retry_display", "canceled_display", "expired_display")}),
        ("Money", {"fields": ("price", "paid", "refunded", "refundable", "payment_method_title")}),
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


# ---------------------------------------------------------------- payments and refunds

@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ("pay_id", "account", "subscription", "purpose", "status_display", "amount", "provider_payment_id",
                    "paid", "created")
    list_filter = ("status", "purpose", "paid_at", "created_at")
    search_fields = ("user_id", "provider_payment_id")
    search_help_text = "User id, YooKassa payment id, payment id or subscription id"
    date_hierarchy = "created_at"
    fields = ("payment_id", "account", "subscription", "provider_payment_id", "purpose", "status_display", "amount",
              "reason", "confirmation_url", "paid", "created", "updated", "refunds")
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
        return status_badge(obj.status)

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

    @admin.display(description="refunds")
    def refunds(self, obj: Payment) -> SafeString:
        return refunds_table(Refund.objects.filter(payment_id=obj.payment_id).order_by("-created_at"))


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ("ref_id", "account", "subscription", "payment", "status_display", "amount", "days_used",
                    "provider_refund_id", "created")
    list_filter = ("status", "created_at", "updated_at")
    search_fields = ("user_id", "provider_refund_id")
    search_help_text = "User id, YooKassa refund id, or a refund, payment or subscription id"
    date_hierarchy = "created_at"
    fields = ("refund_id", "account", "subscription", "payment", "provider_refund_id", "status_display", "amount",
              "days_used", "reason", "created", "updated")
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

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Refund) -> str:
        return fmt_dt(obj.created_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: Refund) -> str:
        return fmt_dt(obj.updated_at)


# ---------------------------------------------------------------- commands

@admin.register(Command)
class CommandAdmin(ReadOnlyAdmin):
    list_display = ("cmd_id", "command_type", "status_display", "actor", "account", "code", "reason", "created",
                    "updated")
    list_filter = ("status", "command_type", ActorKindFilter, "created_at")
    search_fields = ("user_id", "actor_id", "command_type")
    search_help_text = "Command id, user id, operator or command type"
    date_hierarchy = "created_at"
    fields = ("command_id", "command_type", "status_display", "code", "reason", "actor", "account", "outcome_display",
              "created", "updated", "live_status")
    readonly_fields = fields

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(user_id=term) | Q(actor_id=term) | Q(command_type__iexact=term)
        if (uid := as_uuid(term)) is not None:
            match |= Q(command_id=uid)
        return queryset.filter(match), False

    @admin.display(description="command", ordering="command_id")
    def cmd_id(self, obj: Command) -> str:
        return short(obj.command_id)

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: Command) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="actor", ordering="actor_id")
    def actor(self, obj: Command) -> str:
        kind = {"admin": "operator"}.get(obj.actor_kind or "", obj.actor_kind or "?")
        return f"{kind}: {obj.actor_id or '?'}"

    @admin.display(description="account", ordering="user_id")
    def account(self, obj: Command) -> SafeString | str:
        return link(change_url("account", obj.user_id), obj.user_id) if obj.user_id else "—"

    @admin.display(description="outcome")
    def outcome_display(self, obj: Command) -> SafeString:
        return format_html("<pre>{}</pre>", views._pretty(obj.outcome or {}))

    @admin.display(description="live status")
    def live_status(self, obj: Command) -> SafeString:
        return link(views.status_url(str(obj.command_id)), "ask the command API")

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Command) -> str:
        return fmt_dt(obj.created_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: Command) -> str:
        return fmt_dt(obj.updated_at)

    def get_urls(self) -> list[Any]:
        return [self.admin_url("status", self.status_view, "status/<uuid:command_id>/"), *super().get_urls()]

    def status_view(self, request: HttpRequest, command_id: uuid.UUID) -> HttpResponse:
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        return views.command_status(self, request, command_id)


# ---------------------------------------------------------------- accounts and the event log

@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ("user_id", "email", "locale", "subscriptions_count", "active_subscriptions", "paid", "refunded",
                    "last_event")
    list_filter = ("locale", "active_subscriptions", "last_event_at", "created_at")
    search_fields = ("user_id", "email")
    search_help_text = "User id or email"
    fieldsets = (
        (None, {"fields": ("user_id", "email", "locale", "timeline")}),
        ("Totals", {"fields": ("subscriptions_count", "active_subscriptions", "paid", "refunded")}),
        ("Related", {"fields": ("subscriptions", "payments", "refunds", "commands")}),
        ("Record", {"fields": ("last_event", "created", "updated")}),
    )
    readonly_fields = tuple(f for _, options in fieldsets for f in options["fields"])
    change_form_template = "admin/billing/account/change_form.html"

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(Q(user_id=term) | Q(user_id__istartswith=term) | Q(email__icontains=term)), False

    @admin.display(description="paid", ordering="total_paid_minor")
    def paid(self, obj: Account) -> str:
        return format_money(obj.total_paid_minor, obj.currency)

    @admin.display(description="refunded", ordering="total_refunded_minor")
    def refunded(self, obj: Account) -> str:
        return format_money(obj.total_refunded_minor, obj.currency)

    @admin.display(description="last event", ordering="last_event_at")
    def last_event(self, obj: Account) -> str:
        return fmt_dt(obj.last_event_at)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Account) -> str:
        return fmt_dt(obj.created_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: Account) -> str:
        return fmt_dt(obj.updated_at)

    @admin.display(description="timeline")
    def timeline(self, obj: Account) -> SafeString:
        return link(reverse("admin:billing_account_timeline", args=[quote(obj.user_id)]), "every event, newest first")

    @admin.display(description="subscriptions")
    def subscriptions(self, obj: Account) -> SafeString:
        return subscriptions_table(Subscription.objects.filter(user_id=obj.user_id).order_by("-created_at"))

    @admin.display(description="payments")
    def payments(self, obj: Account) -> SafeString:
        return payments_table(Payment.objects.filter(user_id=obj.user_id).order_by("-created_at")[:50])

    @admin.display(description="refunds")
    def refunds(self, obj: Account) -> SafeString:
        return refunds_table(Refund.objects.filter(user_id=obj.user_id).order_by("-created_at")[:50])

    @admin.display(description="recent commands")
    def commands(self, obj: Account) -> SafeString:
        return commands_table(Command.objects.filter(user_id=obj.user_id).order_by("-created_at")[:20])

    def get_urls(self) -> list[Any]:
        return [self.admin_url("timeline", self.timeline_view, "<path:object_id>/timeline/"), *super().get_urls()]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().change_view(request, object_id, form_url,
                                   {**(extra_context or {}), "can_act": self.can_act(request)})

    def timeline_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        from django.contrib.admin.utils import unquote
        from django.core.exceptions import PermissionDenied

        if not self.has_view_permission(request):
            raise PermissionDenied
        user_id = unquote(object_id)
        back = change_url("account", user_id) if Account.objects.filter(user_id=user_id).exists() else None
        return views.account_timeline(self, request, user_id, back)


@admin.register(StoredEvent)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("position", "type", "stream", "stream_version", "actor", "reason", "occurred")
    list_filter = ("type", ActorKindFilter, "occurred_at")
    search_fields = ("stream_id",)
    search_help_text = "Stream id (account-<user id>, plan-<plan id>), user id or event id"
    fields = ("position", "event_id", "type", "schema_version", "stream", "stream_version", "actor", "reason",
              "occurred", "recorded", "payload", "meta")
    readonly_fields = fields

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(stream_id=term) | Q(stream_id=f"account-{term}")
        if (uid := as_uuid(term)) is not None:
            match |= Q(event_id=uid)
        return queryset.filter(match), False

    @admin.display(description="stream", ordering="stream_id")
    def stream(self, obj: StoredEvent) -> SafeString | str:
        if obj.stream_id.startswith("account-"):
            user_id = obj.stream_id[len("account-"):]
            return link(reverse("admin:billing_account_timeline", args=[quote(user_id)]), obj.stream_id)
        if obj.stream_id.startswith("plan-"):
            return link(change_url("plan", obj.stream_id[len("plan-"):]), obj.stream_id)
        return obj.stream_id

    @admin.display(description="actor")
    def actor(self, obj: StoredEvent) -> str:
        actor = obj.actor
        return f"{ {'admin': 'operator'}.get(actor['kind'], actor['kind']) or '?'}: {actor['id'] or '?'}"

    @admin.display(description="reason")
    def reason(self, obj: StoredEvent) -> str:
        return obj.reason or ""

    @admin.display(description="occurred", ordering="occurred_at")
    def occurred(self, obj: StoredEvent) -> str:
        return fmt_dt(obj.occurred_at)

    @admin.display(description="recorded", ordering="recorded_at")
    def recorded(self, obj: StoredEvent) -> str:
        return fmt_dt(obj.recorded_at)

    @admin.display(description="payload")
    def payload(self, obj: StoredEvent) -> SafeString:
        return format_html("<pre>{}</pre>", views._pretty(obj.data))

    @admin.display(description="metadata")
    def meta(self, obj: StoredEvent) -> SafeString:
        return format_html("<pre>{}</pre>", views._pretty(obj.metadata))
