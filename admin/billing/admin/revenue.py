"""The Revenue page: MRR, subscribers, churn, refunds and renewal recovery by month and plan (decision 0124)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from admin.billing import views
from admin.billing.admin.base import ReadOnlyAdmin
from admin.billing.models import RevenueMonth


@admin.register(RevenueMonth)
class RevenueAdmin(ReadOnlyAdmin):
    """Its list is the report itself (the rows are per-account deltas nobody needs one by one)."""

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        return views.revenue_report(self, request)
