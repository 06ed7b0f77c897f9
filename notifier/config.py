"""The notifier's settings: `NotifierServiceSettings` (the shared `Settings` plus the Mailgun
credentials, which no other service receives) and `NotifierSettings` (the `NOTIFIER_*` knobs).

The timings matter only here, and tests shrink them through the environment to make failure
scenarios fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.metrics import port_or_none
from infra.settings import Settings, url_problem, weak_secret

# The local sandbox's values (sandbox/mailgun): development only, refused in production.
SANDBOX_API_KEY = "key-sandbox"  # noqa: S105
SANDBOX_DOMAIN = "mg.billing.local"


class NotifierServiceSettings(Settings):
    """The shared settings plus what only the notifier uses: Mailgun."""

    mailgun_api_key: str = SANDBOX_API_KEY
    mailgun_domain: str = SANDBOX_DOMAIN
    mailgun_api_url: str = "http://127.0.0.1:8020/v3"
    mailgun_from: str = "Billing <billing@mg.billing.local>"
    mailgun_timeout_s: float = 10.0

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if weak_secret(self.mailgun_api_key, SANDBOX_API_KEY):
            problems.append("MAILGUN_API_KEY is a placeholder or the sandbox's key")
        if self.mailgun_domain.strip().lower() in ("", SANDBOX_DOMAIN):
            problems.append("MAILGUN_DOMAIN is the sandbox's domain")
        if SANDBOX_DOMAIN in self.mailgun_from.lower():
            problems.append("MAILGUN_FROM sends from the sandbox's domain")
        if problem := url_problem("MAILGUN_API_URL", self.mailgun_api_url):
            problems.append(problem)
        return problems


class NotifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", env_file=".env", env_file_encoding="utf-8", extra="ignore")

    group_id: str = Field(default="notifier", description="Kafka consumer group")
    commit_interval_s: float = Field(
        default=0.5, ge=0, description="seconds between Kafka offset commits while events keep coming (0: after every batch)"
    )
    start_from: Literal["earliest", "latest"] = Field(
        default="earliest", description="where a NEW consumer group starts (latest: do not email an old log's history)"
    )
    dlq_topic: str | None = Field(default=None, description="dead-letter topic; default: Settings.events_dlq_topic")
    display_timezone: str = Field(default="Europe/Moscow", description="time zone of dates shown in emails")

    http_timeout_s: float | None = Field(default=None, gt=0, description="per-call timeout; default Settings.mailgun_timeout_s")
    inline_budget_s: float = Field(default=10.0, gt=0, description="total retry time for a send inside the consumer loop")
    retry_budget_s: float = Field(default=5.0, gt=0, description="total retry time of one background retry")
    backoff_initial_s: float = Field(default=0.5, gt=0, description="first retry delay (exponential, jittered)")
    backoff_max_s: float = Field(default=60.0, gt=0, description="cap of the back-off between attempts and of parked retries")
    give_up_after_s: float = Field(default=86400.0, gt=0, description="a message still failing this long after its event → DLQ")
    retry_poll_s: float = Field(default=1.0, gt=0, description="how often the background retrier looks for due emails")
    handler_max_attempts: int = Field(default=20, ge=1, description="database/broker errors: handler retries before the record is dead-lettered")
    lease_margin_s: float = Field(default=15.0, ge=0, description="added to the longest possible send to form the claim lease")
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="serve Prometheus GET /metrics on 0.0.0.0:<port> when set (unset: off)"
    )

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _empty_port_is_off(cls, value: object) -> object:
        return port_or_none(value)

    @model_validator(mode="after")
    def _sane(self) -> "NotifierSettings":
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("backoff_initial_s must not exceed backoff_max_s")
        return self
