"""The command API's own settings on top of the shared `Settings`.

Kept here (a subclass) instead of in the shared settings module, so the API's knobs live with
the API; every field still comes from the environment (`API_HOST`, `API_PORT`, ...). The API
alone holds the token verification keys and the webhook's trusted networks (decision 0111).
"""

from __future__ import annotations

import ipaddress
from functools import cached_property

from pydantic import Field, field_validator, model_validator

from infra.settings import Settings, non_public, url_problem, weak_secret

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-in-production"  # noqa: S105 - refused in production
MIN_HS256_SECRET_BYTES = 32  # RFC 7518 3.2: a key at least as long as the hash output
YOOKASSA_NETWORKS = (
    "185.71.76.0/27,185.71.77.0/27,77.75.153.0/25,77.75.156.11/32,77.75.156.35/32,77.75.154.128/25,2a02:5180::/32"
)


class ApiSettings(Settings):
    # Who may call: bearer JWTs (command_api/domain/auth.py, decisions 0063 and 0112)
    jwt_secret: str = Field(default=DEV_JWT_SECRET, description="HS256 shared secret")
    jwt_public_key: str | None = Field(default=None, description="PEM public key (RS256/ES256)")
    jwt_jwks_url: str | None = Field(default=None, description="identity provider's JWKS URL (RS256/ES256, rotates keys)")
    jwt_algorithm: str = Field(default="HS256", description="HS256 | RS256 | ES256: the only one accepted")
    jwt_issuer: str | None = Field(default=None, description="required `iss` when set")
    jwt_audience: str | None = Field(default=None, description="required `aud` (one of, comma-separated) when set")
    jwt_max_token_age_s: int = Field(default=86400, ge=60, description="refuse tokens living (exp-iat, exp-now) longer")
    jwt_service_max_token_age_s: int = Field(
        default=30 * 86400, ge=60, description="the same for `role: service` tokens (the admin's SERVICE_TOKEN)"
    )
    jwt_access_type_claim: str = Field(default="typ", description="claim marking an access token: typ | type | '' (none)")
    jwt_access_type_value: str = Field(default="access", description="its value (Keycloak: Bearer)")
    jwt_jwks_ttl_s: float = Field(default=300.0, gt=0, description="how long a fetched key set is used")
    jwt_jwks_timeout_s: float = Field(default=5.0, gt=0, description="timeout of one JWKS fetch")
    jwt_jwks_min_refresh_s: float = Field(default=30.0, ge=0, description="an unknown kid refetches at most this often")

    # Networks YooKassa's notifications may come from (decision 0062)
    yookassa_trusted_networks: str = YOOKASSA_NETWORKS

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

    @field_validator("jwt_algorithm", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if self.jwt_jwks_url:
            if problem := url_problem("JWT_JWKS_URL", self.jwt_jwks_url):
                problems.append(problem)
        elif not self.jwt_public_key and self.jwt_algorithm == "HS256":
            if weak_secret(self.jwt_secret, DEV_JWT_SECRET):
                problems.append("JWT_SECRET is a placeholder or the development default")
            elif len(self.jwt_secret.encode()) < MIN_HS256_SECRET_BYTES:
                problems.append(f"JWT_SECRET is {len(self.jwt_secret.encode())} bytes; HS256 needs at least {MIN_HS256_SECRET_BYTES}")
        if self.jwt_jwks_url and not (self.jwt_issuer and self.jwt_audience):
            problems.append("JWT_JWKS_URL needs JWT_ISSUER and JWT_AUDIENCE: a provider's keys sign tokens for every client")
        if self.jwt_issuer and (problem := url_problem("JWT_ISSUER", self.jwt_issuer)) and "://" in self.jwt_issuer:
            problems.append(problem)
        try:
            networks = self.trusted_webhook_networks
        except ValueError as exc:
            problems.append(f"YOOKASSA_TRUSTED_NETWORKS is not a list of networks: {exc}")
        else:
            local = [str(n) for n in networks if non_public(n)]
            if local:
                problems.append(
                    f"YOOKASSA_TRUSTED_NETWORKS includes loopback/private networks {', '.join(local)}: "
                    "anyone on them could forge payment notifications"
                )
        return problems

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
