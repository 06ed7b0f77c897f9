"""Reconciliation with YooKassa: the runs and what each found (docs/decisions/0122).

Runs are made by the processor (daily) and by `billing reconcile`; facts they found were sent to
the processor as commands (status `recorded`, with a link to the command). What no fact could
settle stays `open` until an operator looks at YooKassa's dashboard and our timeline and marks it
resolved with a reason — the one thing the admin writes here: bookkeeping of the reconciliation's
own table, not a fact about an account, so it is no command (Django's log keeps who did it).
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.utils.safestring import SafeString

from admin.billing import views
from admin.billing.admin.base import ReadOnlyAdmin
from admin.billing.display import as_uuid, change_url, changelist_url, fmt_dt, link, short, status_badge
from admin.billing.models import ReconciliationDifference, ReconciliationRun
from admin.billing.money import format_money


class ResolveForm(forms.Form):
    resolution = forms.CharField(
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Required: what you found and did (e.g. refunded by hand, a test payment, a chargeback).",
    )

    def clean_resolution(self) -> str:
        text = self.cleaned_data["resolution"].strip()
        if not text:
            raise forms.ValidationError("Say how it was resolved.")
        return text


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdmin):
    list_display = ("run", "window", "trigger", "status_display", "payments_seen", "refunds_seen", "differences_link",
                    "recorded", "started")
    list_filter = ("status", "trigger", "started_at")
    date_hierarchy = "started_at"
    fields = ("run_id", "window", "trigger", "status_display", "payments_seen", "refunds_seen", "differences_link",
              "recorded", "started", "finished", "error")
    readonly_fields = fields

    @admin.display(description="run")
    def run(self, obj: ReconciliationRun) -> str:
        return short(obj.run_id)

    @admin.display(description="window", ordering="window_start")
    def window(self, obj: ReconciliationRun) -> str:
        return f"{fmt_dt(obj.window_start)} – {fmt_dt(obj.window_end)}"

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: ReconciliationRun) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="differences", ordering="differences")
    def differences_link(self, obj: ReconciliationRun) -> SafeString:
        return link(changelist_url("reconciliationdifference", run_id=obj.run_id), obj.differences)

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: ReconciliationRun) -> str:
        return fmt_dt(obj.started_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, obj: ReconciliationRun) -> str:
        return fmt_dt(obj.finished_at)


@admin.register(ReconciliationDifference)
class ReconciliationDifferenceAdmin(ReadOnlyAdmin):
    change_form_template = "admin/billing/reconciliationdifference/change_form.html"
    list_display = ("diff", "kind_display", "object_type", "provider_id", "account", "statuses", "amounts",
                    "status_display", "created")
    list_filter = ("kind", "status", "object_type", "created_at")
    search_fields = ("provider_id", "user_id")
    search_help_text = "YooKassa id, user id, our payment/refund id or run id"
    date_hierarchy = "created_at"
    fields = ("difference_id", "run", "kind_display", "object_type", "provider_id", "our_id", "account", "statuses",
              "amounts", "detail", "status_display", "command", "created", "resolved_by", "resolution", "resolved")
    readonly_fields = fields

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> tuple[Any, bool]:
        from django.db.models import Q

        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(provider_id=term) | Q(user_id=term)
        if (uid := as_uuid(term)) is not None:
            match |= Q(our_id=uid) | Q(run_id=uid) | Q(difference_id=uid)
        return queryset.filter(match), False

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        """`?run_id=` lists one run's differences (the run page links there)."""
        return lookup == "run_id" or super().lookup_allowed(lookup, value, request)  # type: ignore[call-arg]

    def get_urls(self) -> list[Any]:
        return [self.admin_url("resolve", self.resolve_view, "<path:object_id>/resolve/"), *super().get_urls()]

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any) -> HttpResponse:
        context["can_act"] = self.can_act(request)
        return super().render_change_form(request, context, *args, **kwargs)

    def resolve_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Mark an open difference resolved, with the operator's reason."""
        views.require_act_permission(request)
        difference = get_object_or_404(ReconciliationDifference, difference_id=as_uuid(object_id))
        back = change_url("reconciliationdifference", difference.difference_id)
        if difference.status == "resolved":
            return HttpResponseRedirect(back)
        form = ResolveForm(data=request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            with transaction.atomic():
                changed = ReconciliationDifference.objects.filter(
                    difference_id=difference.difference_id, status__in=("open", "recorded")
                ).update(
                    status="resolved", resolved_by=request.user.get_username(),
                    resolution=form.cleaned_data["resolution"], resolved_at=timezone.now(),
                )
                if changed:
                    LogEntry.objects.log_actions(
                        user_id=request.user.pk, queryset=[difference], action_flag=CHANGE, single_object=True,
                        change_message=json.dumps({"resolved": form.cleaned_data["resolution"]}, ensure_ascii=False)[:2000],
                    )
            return HttpResponseRedirect(back)
        return render(
            request,
            "billing/resolve_form.html",
            {
                **self.admin_site.each_context(request), "opts": self.model._meta, "app_label": self.model._meta.app_label,
                "title": "Mark resolved", "form": form, "original": difference, "back_url": back,
            },
        )

    @admin.display(description="difference")
    def diff(self, obj: ReconciliationDifference) -> str:
        return short(obj.difference_id)

    @admin.display(description="run")
    def run(self, obj: ReconciliationDifference) -> SafeString:
        return link(change_url("reconciliationrun", obj.run_id), short(obj.run_id))

    @admin.display(description="kind", ordering="kind")
    def kind_display(self, obj: ReconciliationDifference) -> str:
        return obj.kind.replace("_", " ")

    @admin.display(description="account", ordering="user_id")
    def account(self, obj: ReconciliationDifference) -> SafeString | str:
        return link(change_url("account", obj.user_id), obj.user_id) if obj.user_id else "—"

    @admin.display(description="ours / YooKassa's status")
    def statuses(self, obj: ReconciliationDifference) -> str:
        return f"{obj.our_status or '—'} / {obj.provider_status or '—'}"

    @admin.display(description="ours / YooKassa's amount")
    def amounts(self, obj: ReconciliationDifference) -> str:
        def money(minor: int | None) -> str:
            return format_money(minor, obj.currency or "RUB") if minor is not None else "—"

        return f"{money(obj.our_amount_minor)} / {money(obj.provider_amount_minor)}"

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: ReconciliationDifference) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="recorded by command")
    def command(self, obj: ReconciliationDifference) -> SafeString | str:
        return link(views.status_url(str(obj.command_id)), obj.command_id) if obj.command_id else "—"

    @admin.display(description="found", ordering="created_at")
    def created(self, obj: ReconciliationDifference) -> str:
        return fmt_dt(obj.created_at)

    @admin.display(description="resolved at")
    def resolved(self, obj: ReconciliationDifference) -> str:
        return fmt_dt(obj.resolved_at)
