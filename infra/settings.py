"""Typed configuration: the infrastructure every service shares, and the production gate.

Settings come from the environment (and an optional `.env`), never from code: every variable
is listed in `.env.example`. Services build their own subclass in their bootstrap and pass it
down, so tests construct their own instead of patching globals.

Each service's subclass adds only the variables that service uses (the processor alone holds
the YooKassa credentials, the notifier alone Mailgun's, the API alone the JWT keys), so a
container is never handed a secret it has no use for (decision 0111).

`ENVIRONMENT=production` (any case) refuses the development defaults at start-up: every
subclass adds its own checks to `production_problems()`, and all of them are reported in one
error, so an operator fixes the whole list in one go instead of one restart per mistake.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]

# Values that are never a real secret; `dev-only` marks every development default of this repo.
PLACEHOLDER_SECRETS = {"changeme", "change-me", "change_me", "secret", "password", "placeholder", "todo", ""}

# Addresses that never belong in a production provider URL or a list of trusted public senders.
NON_PUBLIC_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.168.0.0/16", "::/128", "::1/128", "fc00::/7", "fe80::/10",
    )
)


class ProductionConfigError(ValueError):
    """Raised (inside pydantic's ValidationError) with every problem of a production configuration."""

    def __init__(self, service: str, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"ENVIRONMENT=production refuses the {service} configuration ({len(problems)} problems):\n{listed}")


class Settings(BaseSettings):
    """What every part shares: infrastructure, environment, clock, logging."""

    # hide_input_in_errors: a refused configuration must not print its secrets into the logs
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True)

    environment: Environment = Field(default="development", description="development | test | production (any case)")

    # Infrastructure
    database_url: str = "postgresql://postgres@127.0.0.1:55432/billing"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    commands_topic: str = "billing.commands"
    events_topic: str = "billing.events"
    commands_dlq_topic: str = "billing.commands.dlq"
    events_dlq_topic: str = "billing.events.dlq"
    db_pool_size: int = 10

    # Process-wide switches read by infra.clock / infra.logging; declared here so a
    # typo is refused and production can refuse the movable clock.
    billing_clock: Literal["system", "shiftable"] = Field(default="system", description="shiftable: business time can be moved (dev, tests)")
    log_format: Literal["json", "console"] | None = Field(default=None, description="default: json unless stderr is a terminal")
    log_level: str = "INFO"

    @field_validator("environment", "billing_clock", "log_format", mode="before")
    @classmethod
    def _case_insensitive(cls, value: object) -> object:
        """`Production` and ` production ` mean production; a typo stays a typo and is refused."""
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def production(self) -> bool:
        return self.environment == "production"

    def production_problems(self) -> list[str]:
        """Everything wrong with this configuration for production; subclasses extend the list."""
        problems: list[str] = []
        if self.billing_clock == "shiftable":
            problems.append("BILLING_CLOCK=shiftable lets anyone with the database move business time; use system")
        return problems

    @model_validator(mode="after")
    def _refuse_development_values_in_production(self) -> Settings:
        if self.production:
            problems = self.production_problems()
            if problems:
                raise ProductionConfigError(type(self).__name__, problems)
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


def weak_secret(value: str | None, *defaults: str) -> bool:
    """A secret that is missing, a placeholder, a development default or one of `defaults`."""
    text = (value or "").strip()
    return text.lower() in PLACEHOLDER_SECRETS or "dev-only" in text.lower() or text in defaults


def url_problem(name: str, url: str) -> str | None:
    """Why `url` cannot be a production provider endpoint (not https, or a local address), or None."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        return f"{name}={url!r} must be an https:// URL"
    host = (parts.hostname or "").lower()
    if not host or host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return f"{name}={url!r} points at a local host"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if any(address in net for net in NON_PUBLIC_NETWORKS):
        return f"{name}={url!r} points at a loopback or private address"
    return None


def non_public(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """True when `network` includes any loopback, private, link-local or unspecified address."""
    return any(network.version == net.version and network.overlaps(net) for net in NON_PUBLIC_NETWORKS)  # type: ignore[arg-type]


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
