"""The relay's settings: the shared ones plus where it serves its metrics."""

from __future__ import annotations


from pydantic import Field, field_validator

from infra.metrics import port_or_none
from infra.settings import Settings


class RelaySettings(Settings):
    """The shared settings plus the relay's own: where it serves its metrics."""

    relay_metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="serve Prometheus GET /metrics on 0.0.0.0:<port> when set (unset: off)"
    )

    @field_validator("relay_metrics_port", mode="before")
    @classmethod
    def _empty_port_is_off(cls, value: object) -> object:
        return port_or_none(value)
