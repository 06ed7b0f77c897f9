"""What every admin page shares: read-only model admins and the list filters several pages use."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import path

from admin.billing import views
from admin.billing.models import Plan, StoredEvent


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
