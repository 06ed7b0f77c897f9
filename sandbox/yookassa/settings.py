"""Configuration of the YooKassa sandbox, from the environment (and `.env`).

The shop id and secret use the same variables as the services, so one `.env` makes both sides
agree; everything else is prefixed `SANDBOX_YOOKASSA_`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class YooKassaSandboxSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SANDBOX_YOOKASSA_", env_file=".env", extra="ignore", populate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = 8010
    shop_id: str = Field("123456", validation_alias=AliasChoices("YOOKASSA_SHOP_ID", "shop_id"))
    secret_key: str = Field(
        "test_sandbox_secret", validation_alias=AliasChoices("YOOKASSA_SECRET_KEY", "secret_key")
    )
    db: Path = Path(".stack/sandbox/yookassa.sqlite3")
    public_url: str = Field("", description="base of confirmation URLs; default http://host:port")

    webhook_url: str = "http://127.0.0.1:8000/v1/webhooks/yookassa"
    webhook_retry_s: str = "1,2,5,10,30,60,300,1800,3600"
    webhook_timeout_s: float = 5.0
    webhook_max_age_s: float = 86_400.0
    webhook_concurrency: int = 8

    confirmation_ttl_s: float = 600.0
    capture_ttl_s: float = 7 * 86_400.0
    require_receipt: bool = True
    require_refund_receipt: bool = False
    refund_delay_ms: int = 0
    receipt_delay_ms: int = 0
    idempotence_ttl_s: float = 86_400.0
    fee_percent: str = "3.5"
    sweep_interval_s: float = 1.0

    faults: str = ""
    allow_reset: bool = False
    access_log: bool = False

    @field_validator("webhook_retry_s")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def retry_schedule(self) -> list[float]:
        return parse_schedule(self.webhook_retry_s)


def parse_schedule(value: str | list) -> list[float]:
    """`"1,2,5"` (or a list) -> [1.0, 2.0, 5.0]; ValueError on junk or an empty schedule."""
    items = value if isinstance(value, list) else [p for p in str(value).split(",") if p.strip()]
    try:
        schedule = [float(x) for x in items]
    except (TypeError, ValueError):
        raise ValueError(f"retry schedule must be seconds separated by commas, got {value!r}") from None
    if not schedule or any(x < 0 for x in schedule):
        raise ValueError(f"retry schedule must be non-empty and non-negative, got {value!r}")
    return schedule


class RuntimeConfig:
    """The knobs tests may turn while the sandbox runs (`PUT /sandbox/config`); not persisted."""

    FIELDS = (
        "webhook_url",
        "webhook_retry_s",
        "require_receipt",
        "require_refund_receipt",
        "confirmation_ttl_s",
        "capture_ttl_s",
        "refund_delay_ms",
        "receipt_delay_ms",
    )

    def __init__(self, settings: YooKassaSandboxSettings) -> None:
        self.webhook_url: str = settings.webhook_url
        self.webhook_retry_s: list[float] = settings.retry_schedule
        self.require_receipt: bool = settings.require_receipt
        self.require_refund_receipt: bool = settings.require_refund_receipt
        self.confirmation_ttl_s: float = settings.confirmation_ttl_s
        self.capture_ttl_s: float = settings.capture_ttl_s
        self.refund_delay_ms: int = settings.refund_delay_ms
        self.receipt_delay_ms: int = settings.receipt_delay_ms

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.FIELDS}

    def update(self, changes: dict) -> None:
        """Apply a partial update; ValueError (nothing changed) on an unknown field or bad value."""
        unknown = set(changes) - set(self.FIELDS)
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}; known: {list(self.FIELDS)}")
        staged = self.as_dict()
        for name, value in changes.items():
            if name == "webhook_url":
                if value is None:
                    value = ""
                if not isinstance(value, str) or (value and not value.startswith(("http://", "https://"))):
                    raise ValueError("webhook_url must be an http(s) URL or empty")
            elif name == "webhook_retry_s":
                value = parse_schedule(value)
            elif name in ("require_receipt", "require_refund_receipt"):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
            else:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{name} must be a non-negative number")
                if name in ("refund_delay_ms", "receipt_delay_ms"):
                    value = int(value)
            staged[name] = value
        for name, value in staged.items():
            setattr(self, name, value)
