"""Commands and how each ended (succeeded, rejected or failed, with the reason)."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from admin.billing import views
from admin.billing.admin.base import ActorKindFilter, ReadOnlyAdmin
from admin.billing.display import as_uuid, change_url, fmt_dt, link, short, status_badge
from admin.billing.models import Command


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
