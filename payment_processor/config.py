"""The processor's settings: `ProcessorServiceSettings` (the shared `Settings` plus the YooKassa
credentials, which no other service receives) and `ProcessorSettings` (every `PROCESSOR_*` knob:
the consumer, the janitor and the renewal scheduler).

Only `bootstrap` reads them. Tests shrink the janitor's schedule to about a second with
`PROCESSOR_JANITOR_SCHEDULE_S=1,1,1` and friends; production keeps the defaults.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from infra.metrics import port_or_none
from infra.settings import Settings, url_problem, weak_secret
from payment_processor.domain.provider import ReceiptSettings
from schemas.receipts import PaymentMode, PaymentSubject, TaxSystemCode, VatCode

# The local sandbox's credentials (sandbox/yookassa): development values, refused in production.
SANDBOX_SHOP_ID = "123456"
SANDBOX_SECRET_KEY = "test_sandbox_secret"  # noqa: S105


class ProcessorServiceSettings(Settings):
    """The shared settings plus what only the processor uses: YooKassa and the test-only crash hook."""

    yookassa_shop_id: str = SANDBOX_SHOP_ID
    yookassa_secret_key: str = SANDBOX_SECRET_KEY
    yookassa_api_url: str = "http://127.0.0.1:8010/v3"
    yookassa_timeout_s: float = 10.0
    yookassa_return_url: str = "http://127.0.0.1:8000/v1/return"
    # 54-FZ receipts (docs/decisions/0123): the shop's tax system, and the defaults for plans that
    # set none. A wrong value is refused in every environment; production refuses them unset.
    yookassa_tax_system_code: TaxSystemCode | None = Field(default=None, description="the shop's tax_system_code, 1..6")
    yookassa_receipt_vat_code: VatCode | None = Field(default=None, description="default vat_code, 1..12 (unset: 1, no VAT, outside production)")
    yookassa_receipt_payment_subject: PaymentSubject = "service"
    yookassa_receipt_payment_mode: PaymentMode = "full_payment"
    # Read by payment_processor.handlers.CrashPoints from the process environment; declared here
    # so production can refuse it.
    billing_crash_at: str = Field(default="", description="TEST-ONLY: SIGKILL the process at these points")
    billing_crash_once_file: str = ""

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if self.yookassa_shop_id.strip() in ("", SANDBOX_SHOP_ID):
            problems.append("YOOKASSA_SHOP_ID is the sandbox's shop id")
        if weak_secret(self.yookassa_secret_key, SANDBOX_SECRET_KEY) or self.yookassa_secret_key.startswith("test_"):
            problems.append("YOOKASSA_SECRET_KEY is a placeholder or a test key (live keys start with live_)")
        for name in ("yookassa_api_url", "yookassa_return_url"):
            if problem := url_problem(name.upper(), getattr(self, name)):
                problems.append(problem)
        if self.yookassa_tax_system_code is None:
            problems.append("YOOKASSA_TAX_SYSTEM_CODE is not set: receipts need the shop's tax system (1..6)")
        if self.yookassa_receipt_vat_code is None:
            problems.append("YOOKASSA_RECEIPT_VAT_CODE is not set: receipts need a default VAT code (1..12)")
        if self.billing_crash_at.strip():
            problems.append("BILLING_CRASH_AT is set: the test-only crash hook would kill the processor on purpose")
        return problems


    @field_validator("yookassa_tax_system_code", "yookassa_receipt_vat_code", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def receipts(self) -> ReceiptSettings:
        """The receipt defaults and the shop's tax system code, as the domain takes them."""
        return ReceiptSettings(
            vat_code=self.yookassa_receipt_vat_code or 1,
            payment_subject=self.yookassa_receipt_payment_subject,
            payment_mode=self.yookassa_receipt_payment_mode,
            tax_system_code=self.yookassa_tax_system_code,
        )


def _floats(value: object) -> object:
    if isinstance(value, str):
        return [float(part) for part in value.split(",") if part.strip()]
    if isinstance(value, (int, float)):
        return [float(value)]
    return value


class ProcessorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROCESSOR_", env_file=".env", env_file_encoding="utf-8", extra="ignore")

    group_id: str = "payment-processor"
    consumers: int = Field(default=1, ge=1, le=64, description="Kafka consumers in one process (each runs up to `concurrency` commands)")
    concurrency: int = Field(
        default=64, ge=1, le=1024, description="commands of different accounts handled at once per consumer (one account's stay in order)"
    )
    commands_partitions: int = Field(default=6, ge=1, description="partitions if the processor creates the commands topic")
    max_attempts: int = Field(default=5, ge=1, description="tries per command before it is dead-lettered and failed")
    provider_concurrency: int = Field(default=16, ge=1, le=256, description="YooKassa calls in flight per process")
    db_pool_size: int = Field(default=16, ge=1, le=256, description="asyncpg connections of the command handler per process")
    conflict_retries: int = Field(default=20, ge=1)
    session_timeout_ms: int = Field(
        default=10000, ge=6000, description="Kafka group session: how soon partitions of a crashed instance move on"
    )

    janitor_enabled: bool = True
    janitor_schedule_s: Annotated[list[float], NoDecode] = Field(default=[30, 120, 600, 3600], description="delays of the first checks after an intent")
    janitor_repeat_s: float = Field(default=3600, gt=0, description="then every this many seconds ...")
    janitor_window_s: float = Field(default=86400, gt=0, description="... until this long after the intent")
    janitor_late_repeat_s: float = Field(default=86400, gt=0, description="after the window: one check per this many seconds")
    janitor_tick_s: float = Field(default=1.0, gt=0, description="how often the janitor looks for due operations")
    janitor_batch: int = Field(default=500, ge=1)

    # The renewal scheduler (entrypoints/scheduler.py). Its dunning schedule is
    # `dunning_retry_days`: the handler computes each next retry when a charge fails.
    scheduler_enabled: bool = True
    scheduler_tick_s: float = Field(default=5.0, gt=0, description="how often to look for due subscriptions")
    scheduler_batch: int = Field(default=500, ge=1, description="rows per transaction")
    renewal_lead_s: float = Field(default=86400, ge=0, description="charge the next period this long before the current one ends")
    expiry_reminder_lead_s: float = Field(default=3 * 86400, ge=0, description="'expiring soon' email this long before a non-renewing end")
    scheduler_resend_s: float = Field(
        default=3600, gt=0, description="an expiry or reminder still due this long after it was published goes out again"
    )

    # Reconciliation with YooKassa (docs/decisions/0122): the previous UTC day, once a day.
    reconcile_enabled: bool = True
    reconcile_after_s: float = Field(default=3600, ge=0, description="reconcile yesterday this long after midnight UTC (late notifications land first)")
    reconcile_tick_s: float = Field(default=60, gt=0, description="how often to look whether yesterday is reconciled yet")
    reconcile_margin_s: float = Field(default=2 * 86400, ge=0, description="both sides are read this far around the window to match edge objects")

    dunning_retry_days: Annotated[list[float], NoDecode] = Field(default=[1, 3, 5])
    card_check_amount: Decimal = Field(
        default=Decimal("1.00"), gt=0, le=1000, decimal_places=2,
        description="what a card check takes in RUB (refunded at once): card replacement, auto-renew on, trials",
    )
    price_change_notice_days: int = Field(
        default=30, ge=0, le=3660, description="a subscriber is told of a plan's new price at least this many days before paying it"
    )
    health_port: int | None = Field(default=None, description="serve GET /healthz on 127.0.0.1:<port> when set")
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="serve Prometheus GET /metrics on 0.0.0.0:<port> when set (unset: off)"
    )

    @field_validator("metrics_port", "health_port", mode="before")
    @classmethod
    def _empty_port_is_off(cls, value: object) -> object:
        return port_or_none(value)

    @model_validator(mode="after")
    def _metrics_port_is_its_own(self) -> ProcessorSettings:
        if self.metrics_port is not None and self.metrics_port == self.health_port:
            raise ValueError("PROCESSOR_METRICS_PORT must differ from PROCESSOR_HEALTH_PORT (/metrics is served on the health port too)")
        return self

    @field_validator("janitor_schedule_s", "dunning_retry_days", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _floats(value)

    @property
    def renewal_lead(self) -> timedelta:
        return timedelta(seconds=self.renewal_lead_s)

    @property
    def expiry_reminder_lead(self) -> timedelta:
        return timedelta(seconds=self.expiry_reminder_lead_s)

    def next_check_at(self, opened_at: datetime, checks_done: int, now: datetime) -> datetime:
        """When to ask YooKassa again after `checks_done` checks of an operation opened at `opened_at`."""
        schedule = self.janitor_schedule_s
        if checks_done < len(schedule):
            return now + timedelta(seconds=schedule[checks_done]) if checks_done else opened_at + timedelta(seconds=schedule[0])
        if now - opened_at < timedelta(seconds=self.janitor_window_s):
            return now + timedelta(seconds=self.janitor_repeat_s)
        return now + timedelta(seconds=self.janitor_late_repeat_s)
