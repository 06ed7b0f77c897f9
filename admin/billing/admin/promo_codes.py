"""Promo codes: their terms, uses held and left, with the operator actions to create and deactivate
them (commands through the command API, like every other action)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.safestring import SafeString

from admin.billing import forms, views
from admin.billing.admin.base import ReadOnlyAdmin
from admin.billing.display import change_url, changelist_url, fmt_dt, link
from admin.billing.models import PromoCode


@admin.register(PromoCode)
class PromoCodeAdmin(ReadOnlyAdmin):
    list_display = ("code", "discount", "periods", "expires", "active", "redemptions", "remaining_display", "plans", "subscribers")
    list_filter = ("active",)
    search_fields = ("code",)
    ordering = ("-created_at",)
    fields = ("code", "discount", "periods", "expires", "active", "deactivated_reason", "max_redemptions", "redemptions",
              "released", "remaining_display", "plans", "subscribers", "created", "updated")
    readonly_fields = fields
    change_list_template = "admin/billing/promocode/change_list.html"
    change_form_template = "admin/billing/promocode/change_form.html"

    @admin.display(description="remaining")
    def remaining_display(self, obj: PromoCode) -> str:
        return "no limit" if obj.remaining is None else str(obj.remaining)

    @admin.display(description="plans")
    def plans(self, obj: PromoCode) -> str:
        return ", ".join(obj.plan_ids) if obj.plan_ids else "every plan"

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, obj: PromoCode) -> str:
        return fmt_dt(obj.expires_at)

    @admin.display(description="subscriptions")
    def subscribers(self, obj: PromoCode) -> SafeString:
        return link(changelist_url("subscription", promo_code=obj.code), "subscriptions")

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: PromoCode) -> str:
        return fmt_dt(obj.created_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: PromoCode) -> str:
        return fmt_dt(obj.updated_at)

    def get_urls(self) -> list[Any]:
        return [
            self.admin_url("create", self.create_view, "create/"),
            self.admin_url("deactivate", self.deactivate_view, "<path:object_id>/deactivate/"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {**(extra_context or {}), "can_act": self.can_act(request)})

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "can_act": self.can_act(request)})

    def create_view(self, request: HttpRequest) -> HttpResponse:
        return views.operator_action(
            self, request, title="Create a promo code", make_form=forms.CreatePromoCodeForm, api_path="/promo-codes",
            back_url=changelist_url("promocode"),
        )

    def deactivate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        code = get_object_or_404(PromoCode, code=object_id)
        return views.operator_action(
            self, request, title=f"Deactivate promo code {code.code}", make_form=forms.DeactivatePromoCodeForm,
            api_path=f"/promo-codes/{code.code}/deactivate", back_url=change_url("promocode", code.code), obj=code,
            summary=[("code", code.code), ("discount", code.discount), ("uses", str(code.redemptions)),
                     ("remaining", "no limit" if code.remaining is None else str(code.remaining))],
        )
