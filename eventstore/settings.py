"""Typed configuration shared by every service.

Settings come from the environment (and an optional `.env`), never from code: every variable
is listed in `.env.example`. Services build one `Settings` in their bootstrap and pass it down,
so tests construct their own instead of patching globals.
"""

from __future__ import annotations

from functools import cached_property

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", ""}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: str = Field(default="development", description="development | test | production")

    # Infrastructure
    database_url: str = "postgresql://postgres@127.0.0.1:55432/billing"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    commands_topic: str = "billing.commands"
    events_topic: str = "billing.events"
    commands_dlq_topic: str = "billing.commands.dlq"
    events_dlq_topic: str = "billing.events.dlq"
    db_pool_size: int = 10

    # YooKassa
    yookassa_shop_id: str = "123456"
    yookassa_secret_key: str = "test_sandbox_secret"
    yookassa_api_url: str = "http://127.0.0.1:8010/v3"
    yookassa_timeout_s: float = 10.0
    yookassa_return_url: str = "http://127.0.0.1:8000/v1/return"
    yookassa_trusted_networks: str = (
        "185.71.76.0/27,185.71.77.0/27,77.75.153.0/25,77.75.156.11/32,77.75.156.35/32,"
        "77.75.154.128/25,2a02:5180::/32"
    )

    # Mailgun
    mailgun_api_key: str = "key-sandbox"
    mailgun_domain: str = "mg.billing.local"
    mailgun_api_url: str = "http://127.0.0.1:8020/v3"
    mailgun_from: str = "Billing <billing@mg.billing.local>"
    mailgun_timeout_s: float = 10.0

    # Auth
    jwt_secret: str = "dev-only-jwt-secret-change-me-in-production"
    jwt_public_key: str | None = None
    jwt_algorithm: str = "HS256"

    # Command API
    command_api_url: str = "http://127.0.0.1:8000"
    service_token: str | None = Field(default=None, description="bearer token the admin uses")

    @model_validator(mode="after")
    def _refuse_placeholders_in_production(self) -> "Settings":
        if self.environment == "production":
            weak = [
                name
                for name in ("jwt_secret", "yookassa_secret_key", "mailgun_api_key")
                if getattr(self, name).lower() in PLACEHOLDER_SECRETS or "dev-only" in getattr(self, name)
            ]
            if weak:
                raise ValueError(f"placeholder secrets in production: {', '.join(weak)}")
        return self

    @cached_property
    def sqlalchemy_url(self) -> str:
        """The database URL with the asyncpg driver, for SQLAlchemy's async engine."""
        return to_driver_url(self.database_url, "asyncpg")

    @cached_property
    def psycopg_url(self) -> str:
        """The database URL with the psycopg driver, for Alembic and synchronous tools."""
        return to_driver_url(self.database_url, "psycopg")

    @property
    def kafka_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap_servers.split(",") if s.strip()]


def to_driver_url(url: str, driver: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    base = scheme.split("+", 1)[0]
    if base == "postgres":
        base = "postgresql"
    return f"{base}+{driver}://{rest}"


def plain_url(url: str) -> str:
    """`postgresql://...` without a driver, as asyncpg.connect and psql accept it."""
    scheme, _, rest = url.partition("://")
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url
