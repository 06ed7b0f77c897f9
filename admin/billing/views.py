"""Views beyond Django's stock admin pages: operator actions, command status, account timeline, revenue.

Actions never touch a table: a valid form becomes one POST to the command API (see
command_api.py), and the operator sees what the API says — succeeded, rejected with its reason,
failed, or still processing with a link to a status page that refreshes itself until it ends.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from admin.billing.command_api import CommandApi, CommandResult
from admin.billing.forms import OperatorCommandForm
from admin.billing.models import Command, Plan, StoredEvent
from admin.billing.money import format_money
from rules import revenue

ACT_PERMISSION = "billing.can_act"
TIMELINE_PAGE_SIZE = 200


def require_act_permission(request: HttpRequest) -> None:
    if not request.user.has_perm(ACT_PERMISSION):
        raise PermissionDenied("Only billing operators may issue commands.")


def _context(model_admin: admin.ModelAdmin, request: HttpRequest, **extra: Any) -> dict[str, Any]:
    return {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "app_label": model_admin.model._meta.app_label,
        **extra,
    }


def status_url(command_id: str) -> str:
    return reverse("admin:billing_command_status", args=[command_id])


def _log(request: HttpRequest, obj: Any, result: CommandResult, title: str, body: dict[str, Any]) -> None:
    """Django's admin log records who issued which command (the event log records what it did)."""
    if obj is None:
        return
    LogEntry.objects.log_actions(
        user_id=request.user.pk,
        queryset=[obj],
        action_flag=CHANGE,
        change_message=json.dumps(
            {"command": title, "command_id": result.command_id, "status": result.status, "request": body},
            ensure_ascii=False,
            default=str,
        )[:2000],
        single_object=True,
    )


def operator_action(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    *,
    title: str,
    make_form: Callable[..., OperatorCommandForm],
    api_path: str | Callable[[OperatorCommandForm], str],
    back_url: str,
    obj: Any = None,
    summary: Sequence[tuple[str, Any]] = (),
) -> HttpResponse:
    """Render an action's form; on a valid POST, send the command and show its outcome."""
    require_act_permission(request)
    notice: CommandResult | None = None
    if request.method == "POST":
        form = make_form(data=request.POST)
        if form.is_valid():
            body = form.api_body()
            path = api_path(form) if callable(api_path) else api_path
            result = CommandApi().post(
                path,
                body,
                operator=request.user.get_username(),
                idempotency_key=str(form.cleaned_data["idempotency_key"]),
            )
            if result.command_id is not None:
                _log(request, obj, result, title, body)
                return render(
                    request,
                    "billing/command_result.html",
                    _context(
                        model_admin, request, title=f"{title}: {result.status}", action_title=title,
                        result=result, back_url=back_url, summary=summary, request_body=body,
                        status_url=status_url(result.command_id), original=obj,
                    ),
                )
            notice = result
            if result.status != "unknown" and result.http_status != 409:
                # The API refused the request without creating a command: a corrected form is a
                # new request, so it gets a new key (the API rejects a reused key with a new body).
                data = request.POST.copy()
                data["idempotency_key"] = str(uuid.uuid4())
                form = make_form(data=data)
                form.is_valid()
    else:
        form = make_form()
    return render(
        request,
        "billing/action_form.html",
        _context(
            model_admin, request, title=title, form=form, notice=notice, back_url=back_url,
            summary=summary, original=obj,
        ),
    )


def command_status(model_admin: admin.ModelAdmin, request: HttpRequest, command_id: uuid.UUID) -> HttpResponse:
    """A command's status from the command API; the page refreshes itself until the command ends."""
    result = CommandApi().command(str(command_id), operator=request.user.get_username())
    stored = Command.objects.filter(command_id=command_id).first()
    return render(
        request,
        "billing/command_status.html",
        _context(
            model_admin, request, title=f"Command {command_id}", result=result, command_id=str(command_id),
            stored=stored, refresh=not result.terminal,
        ),
    )


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def account_timeline(
    model_admin: admin.ModelAdmin, request: HttpRequest, user_id: str, back_url: str | None
) -> HttpResponse:
    """Every event of `account-<user_id>`, newest first, straight from the event store."""
    stream_id = f"account-{user_id}"
    events = StoredEvent.objects.filter(stream_id=stream_id).order_by("-stream_version")
    page = Paginator(events, TIMELINE_PAGE_SIZE).get_page(request.GET.get("page"))
    rows = []
    for event in page.object_list:
        actor = event.actor
        rows.append(
            {
                "event": event,
                "actor_kind": {"admin": "operator"}.get(actor["kind"], actor["kind"]) or "—",
                "actor_id": actor["id"],
                "reason": event.reason,
                "payload": _pretty(event.data),
                "metadata": _pretty(event.metadata),
            }
        )
    return render(
        request,
        "billing/timeline.html",
        _context(
            model_admin, request, title=f"Timeline of account {user_id}", user_id=user_id,
            stream_id=stream_id, rows=rows, page=page, back_url=back_url,
        ),
    )


MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def revenue_report(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    """The revenue report by month and plan (decision 0124), from the projector's `read.revenue`:
    one GROUP BY over its monthly deltas, then the pure arithmetic of rules/revenue.py. `?format=csv`
    downloads the same lines."""
    plan_id = (request.GET.get("plan") or "").strip() or None
    months = {name: (request.GET.get(name) or "").strip() for name in ("from", "to")}
    errors = [f"«{value}» is not a month (YYYY-MM)" for value in months.values() if value and not MONTH_RE.match(value)]
    month_from, month_to = (months[n] if MONTH_RE.match(months[n]) else None for n in ("from", "to"))
    with connection.cursor() as cursor:
        cursor.execute(revenue.SUM_SQL.format(schema="read"))
        names = [c[0] for c in cursor.description]
        rows = [revenue.MonthTotals(**dict(zip(names, r, strict=True))) for r in cursor.fetchall()]
    lines = revenue.report(rows, plan_id=plan_id, month_from=month_from, month_to=month_to)
    if request.GET.get("format") == "csv":
        response = HttpResponse(revenue.csv_text(lines), content_type="text/csv; charset=utf-8")
        name = "-".join(p for p in ("revenue", plan_id, month_from, month_to) if p)
        response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return response
    query = request.GET.copy()
    query["format"] = "csv"
    return render(
        request,
        "billing/revenue.html",
        _context(
            model_admin, request, title="Revenue by month and plan", lines=[_shown(ln) for ln in lines], errors=errors,
            plans=Plan.objects.order_by("plan_id"), plan_id=plan_id or "", month_from=months["from"], month_to=months["to"],
            csv_query=query.urlencode(),
        ),
    )


def _percent(value: Any) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _shown(line: revenue.ReportLine) -> dict[str, Any]:
    """A report line with money as money and ratios as percentages."""
    return {
        **vars(line), "mrr": format_money(line.mrr_minor, line.currency), "revenue": format_money(line.revenue_minor, line.currency),
        "refunded": format_money(line.refunded_minor, line.currency), "refund_share": _percent(line.refund_share),
        "recovery_rate": _percent(line.recovery_rate),
    }
