"""The projector's settings: the shared ones plus the projector's own knobs (`PROJECTOR_*`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from infra.metrics import port_or_none
from infra.settings import Settings


class ProjectorSettings(Settings):
    """Settings plus the projector's own knobs (environment: PROJECTOR_GROUP_ID, PROJECTOR_BATCH_MAX)."""

    projector_group_id: str = Field(default="billing-projector", description="Kafka consumer group")
    projector_batch_max: int = Field(default=1000, ge=1, description="records fetched (and applied) per transaction")
    projector_commit_interval_s: float = Field(
        default=0.5, ge=0, description="seconds between Kafka offset commits while events keep coming (0: after every batch)"
    )
    projector_session_timeout_ms: int = Field(
        default=10_000, ge=1000, description="Kafka session timeout: how long a crashed instance holds its partitions"
    )
    projector_metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="serve Prometheus GET /metrics on 0.0.0.0:<port> when set (unset: off)"
    )

    @field_validator("projector_metrics_port", mode="before")
    @classmethod
    def _empty_port_is_off(cls, value: object) -> object:
        return port_or_none(value)
