"""The plan catalogue: prices, scheduled price changes and periods, with the operator actions to
create plans, schedule a new price and archive plans."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from admin.billing import forms, views
from admin.billing.admin.base import ReadOnlyAdmin
from admin.billing.display import change_url, changelist_url, fmt_dt, link, vat_label
from admin.billing.models import Plan
from admin.billing.money import format_money


@admin.register(Plan)
class PlanAdmin(ReadOnlyAdmin):
    list_display = ("plan_id", "name", "price_display", "period_days", "trial_days", "archived", "subscribers", "updated")
    list_filter = ("archived", "period_days")
    search_fields = ("plan_id", "name")
    ordering = ("archived", "plan_id")
    fields = ("plan_id", "name", "price_display", "scheduled_changes", "period_days", "trial_days", "description", "archived",
              "vat", "payment_subject", "payment_mode", "created", "updated", "subscriptions_link")
    readonly_fields = fields
    change_list_template = "admin/billing/plan/change_list.html"
    change_form_template = "admin/billing/plan/change_form.html"

    @admin.display(description="price", ordering="price_minor")
    def price_display(self, obj: Plan) -> str:
        return format_money(obj.price_minor, obj.currency)

    @admin.display(description="receipt VAT code", ordering="vat_code")
    def vat(self, obj: Plan) -> str:
        return vat_label(obj.vat_code)

    @admin.display(description="scheduled price changes")
    def scheduled_changes(self, obj: Plan) -> SafeString | str:
        """Every change the plan ever had, by effective date (the read model keeps them all)."""
        changes = obj.price_changes or []
        if not changes:
            return "—"
        return format_html_join(
            "", "<div class=\"billing-price-change\">{} from {}{}</div>",
            ((format_money(c["price_minor"], obj.currency), fmt_dt(datetime.fromisoformat(c["effective_at"])),
              " — existing subscribers keep their price" if c.get("grandfather") else "") for c in changes),
        )

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
            self.admin_url("price", self.price_change_view, "<path:object_id>/price-change/"),
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

    def price_change_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        plan = get_object_or_404(Plan, plan_id=object_id)

        def make_form(**kwargs: Any) -> forms.OperatorCommandForm:
            return forms.SchedulePriceChangeForm(**kwargs, currency=plan.currency)

        return views.operator_action(
            self, request, title=f"Schedule a new price for plan {plan.plan_id}", make_form=make_form,
            api_path=f"/plans/{plan.plan_id}/price-changes", back_url=change_url("plan", plan.plan_id), obj=plan,
            summary=[("plan", str(plan)), ("price", plan.price), ("period", f"{plan.period_days} days"),
                     ("scheduled", self.scheduled_changes(plan))],
        )

    def archive_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        plan = get_object_or_404(Plan, plan_id=object_id)
        return views.operator_action(
            self, request, title=f"Archive plan {plan.plan_id}", make_form=forms.ArchivePlanForm,
            api_path=f"/plans/{plan.plan_id}/archive", back_url=change_url("plan", plan.plan_id), obj=plan,
            summary=[("plan", str(plan)), ("price", plan.price), ("period", f"{plan.period_days} days"),
                     ("archived", "yes" if plan.archived else "no")],
        )
