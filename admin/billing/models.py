"""Unmanaged models over tables other parts own: the read models and the event store.

The projector is the only writer of `read.*` (projector/migrations/versions/0001_read_models.py)
and the processor the only writer of `eventstore.events`; Django never creates, alters or writes
them (`managed = False`, and every admin page is read-only). Their `db_table` names the schema,
because Django's own search path is only `django`. Related rows are joined by plain id columns,
not foreign keys: the read models are updated one event at a time, so a payment may briefly
exist before its subscription row does, and a page must not break on that.
"""

from __future__ import annotations

from django.db import models

from admin.billing.money import format_money


def _table(schema: str, name: str) -> str:
    # Django quotes db_table as one identifier; this yields "schema"."name".
    return f'{schema}"."{name}'


class Plan(models.Model):
    plan_id = models.TextField(primary_key=True)
    name = models.TextField()
    price_minor = models.BigIntegerField()
    currency = models.TextField()
    period_days = models.IntegerField()
    description = models.TextField(blank=True)
    archived = models.BooleanField()
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    product = models.TextField(default="cinema")
    vat_code = models.IntegerField(null=True)
    payment_subject = models.TextField(null=True)
    payment_mode = models.TextField(null=True)
    trial_days = models.IntegerField(default=0)
    price_changes = models.JSONField(default=list)
    """Scheduled prices: [{"change_id", "price_minor", "effective_at", "grandfather"}], by effective date."""

    class Meta:
        managed = False
        db_table = _table("read", "plans")
        ordering = ["plan_id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.plan_id})"

    @property
    def price(self) -> str:
        return format_money(self.price_minor, self.currency)


class PromoCode(models.Model):
    """A promo code's terms and uses (`read.promo_codes`, from the code's own stream)."""

    code = models.TextField(primary_key=True)
    percent_off = models.IntegerField(null=True)
    amount_off_minor = models.BigIntegerField(null=True)
    currency = models.TextField(null=True)
    periods = models.IntegerField()
    expires_at = models.DateTimeField()
    max_redemptions = models.IntegerField(null=True)
    plan_ids = models.JSONField(null=True)
    active = models.BooleanField()
    deactivated_reason = models.TextField(null=True)
    redemptions = models.IntegerField()
    released = models.IntegerField()
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = _table("read", "promo_codes")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.code

    @property
    def remaining(self) -> int | None:
        """Uses left under the limit (None: no limit)."""
        return None if self.max_redemptions is None else max(self.max_redemptions - self.redemptions, 0)

    @property
    def discount(self) -> str:
        if self.percent_off is not None:
            return f"{self.percent_off} %"
        return format_money(self.amount_off_minor or 0, self.currency or "RUB")


class Subscription(models.Model):
    subscription_id = models.UUIDField(primary_key=True)
    user_id = models.TextField()
    email = models.TextField(null=True)
    locale = models.TextField(null=True)
    plan_id = models.TextField()
    plan_name = models.TextField()
    status = models.TextField()
    auto_renew = models.BooleanField()
    cancel_at_period_end = models.BooleanField()
    period_start = models.DateTimeField(null=True)
    period_end = models.DateTimeField(null=True)
    price_minor = models.BigIntegerField()
    amount_paid_minor = models.BigIntegerField()
    amount_refunded_minor = models.BigIntegerField()
    currency = models.TextField()
    payment_method_title = models.TextField(null=True)
    last_payment_id = models.UUIDField(null=True)
    renewal_attempt = models.IntegerField()
    next_retry_at = models.DateTimeField(null=True)
    status_reason = models.TextField(null=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    canceled_at = models.DateTimeField(null=True)
    expired_at = models.DateTimeField(null=True)
    product = models.TextField(default="cinema")
    period_paid_minor = models.BigIntegerField(null=True)
    pending_plan_id = models.TextField(null=True)
    pending_plan_name = models.TextField(null=True)
    pending_price_minor = models.BigIntegerField(null=True)
    pending_effective_at = models.DateTimeField(null=True)
    promo_code = models.TextField(null=True)
    discount_minor = models.BigIntegerField()
    promo_periods_left = models.IntegerField()
    trial = models.BooleanField(default=False)
    upcoming_price_minor = models.BigIntegerField(null=True)
    upcoming_price_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = _table("read", "subscriptions")
        ordering = ["-created_at"]
        permissions = [("can_act", "Can adjust subscriptions and plans through operator commands")]

    def __str__(self) -> str:
        return f"{self.plan_name} for {self.user_id} ({self.status})"

    @property
    def refundable_minor(self) -> int:
        """What an operator may still refund: paid − refunded, never below zero."""
        return max(0, self.amount_paid_minor - self.amount_refunded_minor)


class Payment(models.Model):
    payment_id = models.UUIDField(primary_key=True)
    subscription_id = models.UUIDField()
    user_id = models.TextField()
    provider_payment_id = models.TextField(null=True)
    purpose = models.TextField()
    status = models.TextField()
    amount_minor = models.BigIntegerField()
    currency = models.TextField()
    confirmation_url = models.TextField(null=True)
    reason = models.TextField(null=True)
    paid_at = models.DateTimeField(null=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    discount_minor = models.BigIntegerField()
    promo_code = models.TextField(null=True)
    receipt = models.JSONField(null=True)
    receipt_registration = models.TextField(null=True)

    class Meta:
        managed = False
        db_table = _table("read", "payments")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"payment {self.payment_id} ({self.status})"


class Refund(models.Model):
    refund_id = models.UUIDField(primary_key=True)
    subscription_id = models.UUIDField()
    payment_id = models.UUIDField()
    user_id = models.TextField()
    provider_refund_id = models.TextField(null=True)
    status = models.TextField()
    amount_minor = models.BigIntegerField()
    currency = models.TextField()
    days_used = models.IntegerField(null=True)
    reason = models.TextField(null=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    receipt = models.JSONField(null=True)
    receipt_registration = models.TextField(null=True)

    class Meta:
        managed = False
        db_table = _table("read", "refunds")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"refund {self.refund_id} ({self.status})"


class Command(models.Model):
    command_id = models.UUIDField(primary_key=True)
    user_id = models.TextField(null=True)
    command_type = models.TextField()
    status = models.TextField()
    code = models.TextField(null=True)
    reason = models.TextField(null=True)
    outcome = models.JSONField(default=dict)
    actor_kind = models.TextField(null=True)
    actor_id = models.TextField(null=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = _table("read", "commands")
        ordering = ["-created_at"]
        verbose_name = "command status"
        verbose_name_plural = "command statuses"

    def __str__(self) -> str:
        return f"{self.command_type} {self.command_id} ({self.status})"


class Account(models.Model):
    user_id = models.TextField(primary_key=True)
    email = models.TextField(null=True)
    locale = models.TextField(null=True)
    subscriptions_count = models.IntegerField()
    active_subscriptions = models.IntegerField()
    total_paid_minor = models.BigIntegerField()
    total_refunded_minor = models.BigIntegerField()
    currency = models.TextField()
    last_event_at = models.DateTimeField(null=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = _table("read", "accounts")
        ordering = ["-last_event_at"]

    def __str__(self) -> str:
        return f"{self.user_id} <{self.email or '—'}>"


class StoredEvent(models.Model):
    """A row of the event store, read for the account timeline and the event log page."""

    position = models.BigIntegerField(primary_key=True)
    stream_id = models.TextField()
    stream_version = models.IntegerField()
    event_id = models.UUIDField()
    type = models.TextField()
    schema_version = models.IntegerField()
    data = models.JSONField()
    metadata = models.JSONField()
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = _table("eventstore", "events")
        ordering = ["-position"]
        verbose_name = "event"
        verbose_name_plural = "event log"

    def __str__(self) -> str:
        return f"{self.type} #{self.position} on {self.stream_id}"

    @property
    def actor(self) -> dict[str, str]:
        actor = (self.metadata or {}).get("actor") or {}
        return {"kind": str(actor.get("kind", "")), "id": str(actor.get("id", ""))}

    @property
    def reason(self) -> str | None:
        data = self.data if isinstance(self.data, dict) else {}
        reason = data.get("reason")
        return str(reason) if reason not in (None, "") else None


class ReconciliationRun(models.Model):
    """A reconciliation with YooKassa (payment_processor migration pp0006_recon, docs/decisions/0122)."""

    run_id = models.UUIDField(primary_key=True)
    trigger = models.TextField()
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True)
    status = models.TextField()
    payments_seen = models.IntegerField()
    refunds_seen = models.IntegerField()
    differences = models.IntegerField()
    recorded = models.IntegerField()
    error = models.TextField(null=True)

    class Meta:
        managed = False
        db_table = _table("processor", "reconciliation_runs")
        ordering = ["-started_at"]
        verbose_name = "reconciliation run"

    def __str__(self) -> str:
        return f"reconciliation {self.window_start:%Y-%m-%d %H:%M} – {self.window_end:%Y-%m-%d %H:%M} ({self.status})"


class ReconciliationDifference(models.Model):
    """What a run found different between YooKassa's books and ours. The processor writes it; the
    admin writes only its resolution (`resolved_by`, `resolution`, `resolved_at`, status `resolved`)."""

    difference_id = models.UUIDField(primary_key=True)
    run_id = models.UUIDField()
    kind = models.TextField()
    object_type = models.TextField()
    provider_id = models.TextField()
    our_id = models.UUIDField(null=True)
    user_id = models.TextField(null=True)
    our_status = models.TextField(null=True)
    provider_status = models.TextField(null=True)
    our_amount_minor = models.BigIntegerField(null=True)
    provider_amount_minor = models.BigIntegerField(null=True)
    currency = models.TextField(null=True)
    detail = models.TextField()
    status = models.TextField()
    command_id = models.UUIDField(null=True)
    created_at = models.DateTimeField()
    resolved_by = models.TextField(null=True)
    resolution = models.TextField(null=True)
    resolved_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = _table("processor", "reconciliation_differences")
        ordering = ["-created_at", "kind"]
        verbose_name = "reconciliation difference"

    def __str__(self) -> str:
        return f"{self.kind.replace('_', ' ')}: {self.object_type} {self.provider_id}"


class RevenueMonth(models.Model):
    """One account's monthly deltas for one plan (`read.revenue`); the Revenue page sums them
    over accounts and turns them into the report (rules/revenue.py)."""

    row_key = models.TextField(primary_key=True)
    user_id = models.TextField()
    month = models.TextField()
    plan_id = models.TextField()
    currency = models.TextField()
    payments = models.IntegerField()
    revenue_minor = models.BigIntegerField()
    refunds = models.IntegerField()
    refunded_minor = models.BigIntegerField()
    new_subscribers = models.IntegerField()
    churned = models.IntegerField()
    renewed = models.IntegerField()
    renewals_failed = models.IntegerField()
    renewals_recovered = models.IntegerField()
    active_delta = models.IntegerField()
    mrr_delta_minor = models.BigIntegerField()
    updated_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = _table("read", "revenue")
        verbose_name = "revenue"
        verbose_name_plural = "revenue"
