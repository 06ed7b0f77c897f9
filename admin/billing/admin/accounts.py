"""Accounts and the event timeline of each: the event store, read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from admin.billing import views
from admin.billing.admin.base import ActorKindFilter, ReadOnlyAdmin
from admin.billing.display import (
    as_uuid,
    change_url,
    commands_table,
    fmt_dt,
    link,
    payments_table,
    refunds_table,
    subscriptions_table,
)
from admin.billing.models import Account, Command, Payment, Refund, StoredEvent, Subscription
from admin.billing.money import format_money


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
