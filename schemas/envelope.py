"""The envelope every command and event travels in, and the registry of payload types.

One shape for both directions: `id`, `type`, `schema_version`, `occurred_at`, `stream_id`,
`data`, `metadata`. `parse_envelope` looks the type up, lifts old versions with the upcasters
and validates the payload strictly, so a consumer either gets a typed message or a clear error.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any, Literal
from uuid import UUID

from pydantic import Field, SerializeAsAny, model_validator

from schemas.base import Payload, StrictModel, UtcDatetime
from schemas.commands import COMMAND_TYPES
from schemas.events import EVENT_TYPES
from schemas.upcasters import upcast

ActorKind = Literal["user", "admin", "system", "provider"]

PAYLOAD_TYPES: dict[str, type[Payload]] = {cls.__name__: cls for cls in (*COMMAND_TYPES, *EVENT_TYPES)}


class UnknownMessageType(ValueError):
    pass


class Actor(StrictModel):
    kind: ActorKind
    id: str = Field(min_length=1, max_length=200)


SYSTEM = Actor(kind="system", id="billing")


class Metadata(StrictModel):
    correlation_id: str = Field(min_length=1, max_length=200)
    causation_id: str | None = Field(default=None, max_length=200)
    command_id: UUID | None = None
    actor: Actor


class Envelope(StrictModel):
    id: UUID
    type: str
    schema_version: int = Field(ge=1)
    occurred_at: UtcDatetime
    stream_id: str = Field(min_length=1, max_length=200)
    data: SerializeAsAny[Payload]
    metadata: Metadata

    @model_validator(mode="before")
    @classmethod
    def _typed_payload(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        type_name = raw.get("type")
        payload_cls = PAYLOAD_TYPES.get(type_name) if isinstance(type_name, str) else None
        if payload_cls is None:
            raise UnknownMessageType(f"unknown message type: {type_name!r}")
        data = raw.get("data")
        if isinstance(data, dict):
            version = raw.get("schema_version", payload_cls.schema_version)
            if not isinstance(version, int):
                raise ValueError("schema_version must be an integer")
            data = upcast(type_name, version, payload_cls.schema_version, data)
            raw = {**raw, "data": payload_cls.model_validate(data), "schema_version": payload_cls.schema_version}
        elif isinstance(data, Payload) and not isinstance(data, payload_cls):
            raise ValueError(f"data is a {type(data).__name__}, type says {type_name}")
        return raw

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def user_id(self) -> str | None:
        """The user of an `account-<user_id>` stream, else None."""
        return account_user_id(self.stream_id)


def account_stream(user_id: str) -> str:
    return f"account-{user_id}"


def plan_stream(plan_id: str) -> str:
    return f"plan-{plan_id}"


def promo_stream(code: str) -> str:
    """A promo code's own stream: its terms and every redemption (the usage limit's consistency boundary)."""
    return f"promo-{code}"


def account_user_id(stream_id: str) -> str | None:
    return stream_id[len("account-") :] if stream_id.startswith("account-") else None


def new_envelope(
    payload: Payload,
    *,
    stream_id: str,
    metadata: Metadata,
    id: UUID | None = None,
    occurred_at: datetime | None = None,
) -> Envelope:
    """Wrap a payload; the id is random unless the caller derives a deterministic one."""
    return Envelope(
        id=id or uuid.uuid4(),
        type=payload.type_name(),
        schema_version=payload.schema_version,
        occurred_at=occurred_at or datetime.now(timezone.utc),
        stream_id=stream_id,
        data=payload,
        metadata=metadata,
    )


def parse_envelope(raw: bytes | str | dict[str, Any]) -> Envelope:
    """Validate a wire message (JSON bytes/str or a decoded dict) into a typed envelope."""
    if isinstance(raw, (bytes, str)):
        try:
            raw = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"message is not JSON: {exc}") from exc
    return Envelope.model_validate(raw)


def derived_id(namespace: str, *parts: object) -> UUID:
    """A stable UUID from names, so a retried step reaches the same id (never random)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "billing:" + namespace + ":" + ":".join(str(p) for p in parts))
