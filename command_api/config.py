"""The command API's own settings on top of the shared `Settings`.

Kept here (a subclass) instead of in the shared settings module, so the API's knobs live with
the API; every field still comes from the environment (`API_HOST`, `API_PORT`, ...).
"""

from __future__ import annotations

import ipaddress
from functools import cached_property

from pydantic import Field, field_validator, model_validator

from eventstore.settings import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ApiSettings(Settings):
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_trusted_proxies: str = Field(
        default="", description="comma-separated CIDRs whose X-Forwarded-For is believed (none by default)"
    )
    api_max_wait_s: float = Field(default=10.0, ge=0, le=10, description="upper bound of `Prefer: wait=N`")
    api_publish_timeout_s: float = Field(default=10.0, gt=0, description="how long to wait for Kafka's ack")
    api_idempotency_ttl_h: float = Field(default=48.0, ge=24, description="how long a key's first response is kept")
    api_idempotency_stale_s: float = Field(
        default=60.0, gt=0, description="an in-flight key older than this belongs to a crashed request"
    )
    api_commands_partitions: int = Field(default=6, ge=1, description="partitions if the API creates the topic")
    api_db_pool_size: int = Field(default=20, ge=1)

    # The API's edge (issue 16): who counts as a proxy, how big a body may be, what is exposed
    api_trusted_proxy_hops: int = Field(
        default=0, ge=0, le=16,
        description="reverse proxies in front of the API: the client is this many X-Forwarded-For entries from the right",
    )
    api_webhook_sync_window_s: float = Field(
        default=600.0, ge=1, description="notifications about one object and event within this window are one command"
    )
    api_max_request_body_bytes: int = Field(default=64 * 1024, ge=1024, description="larger request bodies get 413")
    api_docs_enabled: bool | None = Field(
        default=None, description="/docs, /redoc, /openapi.json; unset: on, except with ENVIRONMENT=production"
    )
    api_metrics_enabled: bool = Field(default=True, description="serve Prometheus metrics at all")
    api_metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="serve /metrics on this port (API_HOST) instead of the API's port"
    )

    @field_validator("api_docs_enabled", "api_metrics_port", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`API_METRICS_PORT=` in an env file means "not set", as it reads."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _metrics_port_is_another_port(self) -> ApiSettings:
        if self.api_metrics_port is not None and self.api_metrics_port == self.api_port:
            raise ValueError("API_METRICS_PORT must differ from API_PORT (leave it unset to serve /metrics there)")
        return self

    @property
    def docs_enabled(self) -> bool:
        if self.api_docs_enabled is not None:
            return self.api_docs_enabled
        return self.environment.strip().lower() != "production"

    @cached_property
    def trusted_webhook_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.yookassa_trusted_networks)

    @cached_property
    def trusted_proxy_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.api_trusted_proxies)


def parse_networks(text: str) -> tuple[Network, ...]:
    """`"10.0.0.0/8, 127.0.0.1/32"` → networks; a bad entry is a configuration error, raised at start."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def api_settings(settings: Settings) -> ApiSettings:
    """Accept the shared `Settings` (tests, other tools) or an `ApiSettings`."""
    if isinstance(settings, ApiSettings):
        return settings
    return ApiSettings(**settings.model_dump())
