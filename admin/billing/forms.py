"""Forms of the operator actions: each asks for a reason and carries its idempotency key.

The key is generated when the form is first rendered and travels in a hidden field, so pressing
the button twice, or resubmitting after a lost answer, posts the same command once.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Any, get_args

from django import forms
from django.core.exceptions import ValidationError

from admin.billing.display import VAT_CODES
from admin.billing.money import format_money, parse_amount
from schemas.receipts import PaymentMode, PaymentSubject

PLAN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class OperatorCommandForm(forms.Form):
    idempotency_key = forms.UUIDField(widget=forms.HiddenInput)
    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Required. Stored in the event log with your user name.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        initial = dict(kwargs.pop("initial", None) or {})
        initial.setdefault("idempotency_key", uuid.uuid4())
        super().__init__(*args, initial=initial, **kwargs)
        # Field order: the action's own fields first, the reason last, the hidden key anywhere.
        self.order_fields([name for name in self.fields if name not in {"reason", "idempotency_key"}]
                          + ["reason", "idempotency_key"])

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise ValidationError("Say why: the reason is kept in the event log.")
        return reason

    def api_body(self) -> dict[str, Any]:
        """The JSON body of the command API request."""
        raise NotImplementedError


class ExtendForm(OperatorCommandForm):
    days = forms.IntegerField(min_value=1, max_value=3650, initial=30, help_text="Days added to the period end.")

    def api_body(self) -> dict[str, Any]:
        return {"days": self.cleaned_data["days"], "reason": self.cleaned_data["reason"]}


class CancelForm(OperatorCommandForm):
    refund = forms.TypedChoiceField(
        choices=[("1", "Cancel now and refund the unused days (prorated)"), ("0", "Cancel now without a refund")],
        coerce=lambda value: value == "1",
        widget=forms.RadioSelect,
        initial="1",
    )

    def api_body(self) -> dict[str, Any]:
        return {"refund": self.cleaned_data["refund"], "reason": self.cleaned_data["reason"]}


class RefundForm(OperatorCommandForm):
    amount = forms.CharField(max_length=32, help_text="For example 149.50")

    def __init__(self, *args: Any, refundable_minor: int, currency: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refundable_minor = refundable_minor
        self.currency = currency
        self.fields["amount"].help_text = (
            f"At most {format_money(refundable_minor, currency)} (paid − already refunded)."
        )

    def clean_amount(self) -> Decimal:
        try:
            amount = parse_amount(self.cleaned_data["amount"])
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        if int(amount * 100) > self.refundable_minor:
            raise ValidationError(
                f"At most {format_money(self.refundable_minor, self.currency)} can be refunded."
            )
        return amount

    def api_body(self) -> dict[str, Any]:
        return {
            "amount": {"amount": f"{self.cleaned_data['amount']:.2f}", "currency": self.currency},
            "reason": self.cleaned_data["reason"],
        }


class AutoRenewForm(OperatorCommandForm):
    enabled = forms.TypedChoiceField(
        choices=[("1", "Turn auto-renewal on"), ("0", "Turn auto-renewal off")],
        coerce=lambda value: value == "1",
        widget=forms.RadioSelect,
    )

    def api_body(self) -> dict[str, Any]:
        return {"enabled": self.cleaned_data["enabled"], "reason": self.cleaned_data["reason"]}


class GrantForm(OperatorCommandForm):
    user_id = forms.CharField(max_length=200, label="User id")
    email = forms.CharField(max_length=320, help_text="Where receipts and notices go.")
    locale = forms.ChoiceField(choices=[("ru", "Russian"), ("en", "English")], initial="ru")
    plan_id = forms.ChoiceField(label="Plan")
    days = forms.IntegerField(
        min_value=1, max_value=3650, required=False, help_text="Leave empty for the plan's own period."
    )

    def __init__(self, *args: Any, plans: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["plan_id"].choices = plans

    def clean_user_id(self) -> str:
        value = self.cleaned_data["user_id"].strip()
        if not value:
            raise ValidationError("A user id is required.")
        return value

    def clean_email(self) -> str:
        value = self.cleaned_data["email"].strip()
        if not EMAIL_RE.match(value):
            raise ValidationError("Enter an email address.")
        return value

    def api_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "user_id": self.cleaned_data["user_id"],
            "plan_id": self.cleaned_data["plan_id"],
            "email": self.cleaned_data["email"],
            "locale": self.cleaned_data["locale"],
            "reason": self.cleaned_data["reason"],
        }
        if self.cleaned_data.get("days"):
            body["days"] = self.cleaned_data["days"]
        return body


class CreatePlanForm(OperatorCommandForm):
    plan_id = forms.CharField(max_length=64, label="Plan id", help_text="Lower-case letters, digits, - and _.")
    name = forms.CharField(max_length=200)
    price = forms.CharField(max_length=32, help_text="For example 299.00")
    currency = forms.CharField(max_length=3, initial="RUB")
    period_days = forms.IntegerField(min_value=1, max_value=3660, initial=30)
    trial_days = forms.IntegerField(
        min_value=0, max_value=365, initial=0, required=False, label="Trial days",
        help_text="Free days before the first charge, once per customer (a card check starts them); 0 for none.",
    )
    description = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 2}))
    vat_code = forms.TypedChoiceField(
        choices=[("", "processor default")] + [(code, f"{code} — {label}") for code, label in VAT_CODES.items()],
        coerce=int, empty_value=None, required=False, label="Receipt VAT code", help_text="YooKassa vat_code for the 54-FZ receipt.",
    )
    payment_subject = forms.ChoiceField(
        choices=[("", "processor default")] + [(v, v) for v in get_args(PaymentSubject)], required=False,
        label="Receipt payment subject", help_text="A subscription is a service.",
    )
    payment_mode = forms.ChoiceField(
        choices=[("", "processor default")] + [(v, v) for v in get_args(PaymentMode)], required=False,
        label="Receipt payment mode", help_text="full_prepayment: paid before the period; full_payment: settled in full.",
    )

    def clean_plan_id(self) -> str:
        value = self.cleaned_data["plan_id"].strip()
        if not PLAN_ID_RE.match(value):
            raise ValidationError("Use lower-case letters, digits, - and _ (up to 64, starting with a letter or digit).")
        return value

    def clean_price(self) -> Decimal:
        try:
            return parse_amount(self.cleaned_data["price"])
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc

    def clean_currency(self) -> str:
        value = self.cleaned_data["currency"].strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValidationError("A three-letter ISO currency code, such as RUB.")
        return value

    def api_body(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "plan_id": data["plan_id"],
            "name": data["name"].strip(),
            "price": {"amount": f"{data['price']:.2f}", "currency": data["currency"]},
            "period_days": data["period_days"],
            "description": data.get("description", "").strip(),
            "trial_days": data.get("trial_days") or 0,
            "reason": data["reason"],
            # unset: the processor's defaults, fixed into the plan when it is created
            **{k: data[k] for k in ("vat_code", "payment_subject", "payment_mode") if data.get(k)},
        }


class SchedulePriceChangeForm(OperatorCommandForm):
    price = forms.CharField(max_length=32, help_text="The new price, for example 349.00")
    effective_at = forms.DateTimeField(
        label="Effective at", help_text="In the admin's time zone, e.g. 2027-02-01 00:00. Purchases from then pay the new price."
    )
    grandfather = forms.BooleanField(
        required=False, label="Grandfather existing subscribers",
        help_text="Keep every existing subscriber on their price. Otherwise each is emailed and pays the new price "
        "from their first renewal at least the notice period (30 days by default) after the email.",
    )

    def __init__(self, *args: Any, currency: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.currency = currency

    def clean_price(self) -> Decimal:
        try:
            value = parse_amount(self.cleaned_data["price"])
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        if value <= 0:
            raise ValidationError("The price must be more than zero.")
        return value

    def api_body(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "price": {"amount": f"{data['price']:.2f}", "currency": self.currency},
            "effective_at": data["effective_at"].isoformat(),
            "grandfather": bool(data.get("grandfather")),
            "reason": data["reason"],
        }


class ArchivePlanForm(OperatorCommandForm):
    def api_body(self) -> dict[str, Any]:
        return {"reason": self.cleaned_data["reason"]}


PROMO_CODE_RE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{2,31}$")


class CreatePromoCodeForm(OperatorCommandForm):
    code = forms.CharField(max_length=32, help_text="3–32 letters, digits, - and _; stored upper-case.")
    percent_off = forms.IntegerField(min_value=1, max_value=99, required=False, label="Percent off",
                                     help_text="1–99; or give an amount off instead (a free period is a grant).")
    amount_off = forms.CharField(max_length=32, required=False, label="Amount off", help_text="For example 100.00")
    currency = forms.CharField(max_length=3, initial="RUB")
    periods = forms.IntegerField(min_value=1, max_value=120, initial=1, help_text="Discounted paid periods: 1 = the first only.")
    expires_at = forms.DateTimeField(label="Expires at", help_text="YYYY-MM-DD HH:MM, in the admin's time zone.")
    max_redemptions = forms.IntegerField(min_value=1, max_value=10_000_000, required=False, label="Usage limit",
                                         help_text="Uses across all customers; empty: no limit. Each customer may use a code once.")
    plan_ids = forms.CharField(max_length=2000, required=False, label="Only for plans",
                               help_text="Plan ids separated by commas or spaces; empty: every plan.")

    def clean_code(self) -> str:
        value = self.cleaned_data["code"].strip().upper()
        if not PROMO_CODE_RE.match(value):
            raise ValidationError("Use 3–32 letters, digits, - and _.")
        return value

    def clean_amount_off(self) -> Decimal | None:
        text = self.cleaned_data.get("amount_off", "").strip()
        if not text:
            return None
        try:
            return parse_amount(text)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc

    def clean_plan_ids(self) -> list[str] | None:
        ids = [p for p in re.split(r"[\s,]+", self.cleaned_data.get("plan_ids", "").strip()) if p]
        for plan_id in ids:
            if not PLAN_ID_RE.match(plan_id):
                raise ValidationError(f"{plan_id!r} is not a plan id.")
        return ids or None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if (data.get("percent_off") is None) == (data.get("amount_off") is None) and not self.errors:
            raise ValidationError("Give either a percent off or an amount off.")
        return data

    def api_body(self) -> dict[str, Any]:
        data = self.cleaned_data
        body: dict[str, Any] = {
            "code": data["code"], "periods": data["periods"], "expires_at": data["expires_at"].isoformat(),
            "max_redemptions": data.get("max_redemptions"), "plan_ids": data.get("plan_ids"), "reason": data["reason"],
        }
        if data.get("percent_off") is not None:
            body["percent_off"] = data["percent_off"]
        else:
            body["amount_off"] = {"amount": f"{data['amount_off']:.2f}", "currency": data["currency"].strip().upper()}
        return body


class DeactivatePromoCodeForm(OperatorCommandForm):
    def api_body(self) -> dict[str, Any]:
        return {"reason": self.cleaned_data["reason"]}
