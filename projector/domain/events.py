"""The projector's view of an event: the few envelope fields projections read, at dict level.

The live projector (Kafka records, gap fills from the event store) and the replay (raw rows
from `eventstore.events`, a million at a time) both turn what they read into one `ProjectedEvent`
and hand it to the SAME projection functions. Payloads stay plain dicts as stored (JSON mode:
UUIDs and timestamps as strings, money as `{"amount": "299.00", "currency": "RUB"}`), lifted to
the current schema version by the shared upcasters; no pydantic model is built per event, which
is what lets a replay reach tens of thousands of events per second.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

import orjson

from schemas import PAYLOAD_TYPES
from schemas.upcasters import upcast

EVENT_VERSIONS: dict[str, int] = {
    name: cls.schema_version for name, cls in PAYLOAD_TYPES.items() if getattr(cls, "kind", "") == "event"
}


class PoisonEvent(ValueError):
    """A message the projector cannot read (not an event envelope, unknown type, bad version)."""


class ProjectedEvent:
    """One event as projections see it. `data` is the (upcast) payload dict.

    Built through `make` (or the constructors below), which checks the type and upcasts; the
    plain positional `__init__` is the replay's hot path and trusts its caller.
    """

    __slots__ = (
        "position", "stream_id", "version", "type", "data", "occurred_at",
        "command_id", "actor_kind", "actor_id", "user_id", "event_id",
    )

    def __init__(
        self,
        position: int | None,
        stream_id: str,
        version: int,
        type: str,
        data: dict[str, Any],
        occurred_at: datetime,
        command_id: str | None = None,
        actor_kind: str | None = None,
        actor_id: str | None = None,
        event_id: str | None = None,
    ) -> None:
        self.position = position
        self.stream_id = stream_id
        self.version = version
        self.type = type
        self.data = data
        self.occurred_at = occurred_at
        self.command_id = command_id
        self.actor_kind = actor_kind
        self.actor_id = actor_id
        self.event_id = event_id
        self.user_id = stream_id[8:] if stream_id.startswith("account-") else None  # = account_user_id()

    @classmethod
    def make(
        cls,
        *,
        stream_id: str,
        version: int,
        type: str,
        data: dict[str, Any],
        occurred_at: datetime,
        schema_version: int | None = None,
        position: int | None = None,
        event_id: str | None = None,
        command_id: str | None = None,
        actor_kind: str | None = None,
        actor_id: str | None = None,
    ) -> "ProjectedEvent":
        """Check the type and lift old payload versions (raises PoisonEvent)."""
        data = checked_data(type, schema_version, data, stream_id, version)
        return cls(position, stream_id, version, type, data, occurred_at, command_id, actor_kind, actor_id, event_id)

    def __repr__(self) -> str:
        return f"<{self.type} {self.stream_id} v{self.version} @{self.position}>"

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_envelope_dict(
        cls, env: dict[str, Any], *, version: int, position: int | None = None
    ) -> "ProjectedEvent":
        """From a stored envelope as JSON-decoded (a Kafka value, `RecordedEvent.envelope_dict()`)."""
        try:
            meta = env.get("metadata") or {}
            actor = meta.get("actor") or {}
            occurred = env["occurred_at"]
            if isinstance(occurred, str):
                occurred = datetime.fromisoformat(occurred)
            command_id = meta.get("command_id")
            if not isinstance(env["data"], dict):
                raise PoisonEvent("the envelope's data is not an object")
            return cls.make(
                stream_id=env["stream_id"],
                version=int(version),
                type=env["type"],
                data=env["data"],
                occurred_at=occurred,
                position=position,
                event_id=str(env["id"]) if env.get("id") is not None else None,
                command_id=str(command_id) if command_id is not None else None,
                actor_kind=actor.get("kind"),
                actor_id=actor.get("id"),
                schema_version=int(env.get("schema_version", 1)),
            )
        except PoisonEvent:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PoisonEvent(f"not a stored event envelope: {exc!r}") from exc

    @classmethod
    def from_recorded(cls, recorded: Any) -> "ProjectedEvent":
        """From an `eventstore.store.RecordedEvent` (gap fills through `EventStore.read_stream`)."""
        meta = recorded.metadata or {}
        actor = meta.get("actor") or {}
        command_id = meta.get("command_id")
        return cls.make(
            stream_id=recorded.stream_id,
            version=recorded.stream_version,
            type=recorded.type,
            data=recorded.data,
            occurred_at=recorded.occurred_at,
            position=recorded.position,
            event_id=str(recorded.event_id),
            command_id=str(command_id) if command_id is not None else None,
            actor_kind=actor.get("kind"),
            actor_id=actor.get("id"),
            schema_version=recorded.schema_version,
        )


# The columns `from_row` expects, in this order; the replay and catch-up queries select exactly these.
ROW_COLUMNS = (
    "position, stream_id, stream_version, type, schema_version, data::text, occurred_at, "
    "metadata->>'command_id', metadata->'actor'->>'kind', metadata->'actor'->>'id'"
)


def from_row(row: Any, _loads: Any = orjson.loads, _new: Any = ProjectedEvent, _versions: Any = EVENT_VERSIONS) -> ProjectedEvent:
    """From a raw `eventstore.events` row selected with `ROW_COLUMNS` (the replay's hot path)."""
    type_name = row[3]
    data = _loads(row[5])
    if _versions.get(type_name) != row[4]:
        data = checked_data(type_name, row[4], data, row[1], row[2])
    return _new(row[0], row[1], row[2], type_name, data, row[6], row[7], row[8], row[9])


def checked_data(type_name: str, schema_version: int | None, data: dict[str, Any], stream_id: str, version: int) -> dict[str, Any]:
    """The payload lifted to the current schema version; PoisonEvent for unknown types/versions."""
    current = EVENT_VERSIONS.get(type_name)
    if current is None:
        raise PoisonEvent(f"unknown event type {type_name!r} (stream {stream_id} v{version})")
    if schema_version is not None and schema_version != current:
        try:
            return upcast(type_name, schema_version, current, data)
        except ValueError as exc:
            raise PoisonEvent(f"{stream_id} v{version}: {exc}") from exc
    return data


# ---------------------------------------------------------------------- payload helpers


_MINOR_CACHE: dict[str, int] = {}


def minor(money: dict[str, Any] | None) -> int:
    """Integer minor units of a JSON money dict (`{"amount": "299.00", ...}` → 29900)."""
    if not money:
        return 0
    text = money["amount"]
    cached = _MINOR_CACHE.get(text)
    if cached is not None:
        return cached
    text = str(text)
    whole, _, frac = text.partition(".")
    if whole.isdigit() and (not frac or (frac.isdigit() and len(frac) <= 2)):
        value = int(whole) * 100 + (int(frac.ljust(2, "0")) if frac else 0)
    else:
        value = int((Decimal(text) * 100).to_integral_value(ROUND_DOWN))  # unusual spellings
    if len(_MINOR_CACHE) < 100_000:  # prices repeat: plan prices, refund amounts
        _MINOR_CACHE[text] = value
    return value


def currency(money: dict[str, Any] | None, default: str = "RUB") -> str:
    return (money or {}).get("currency") or default


def ts(value: Any) -> datetime | None:
    """A payload timestamp (ISO text in JSON) as an aware datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)
