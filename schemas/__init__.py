"""The contracts of the billing service: envelopes, commands, events, money.

Imports only pydantic and the standard library, so every service (and any other language,
through the exported JSON Schema in `schemas/json/`) can rely on the same shapes.
"""

from schemas.base import MAX_MINOR, Money, Payload, StrictModel, UtcDatetime
from schemas.commands import *  # noqa: F401,F403
from schemas.commands import COMMAND_TYPES, Command, Customer
from schemas.envelope import (
    PAYLOAD_TYPES,
    SYSTEM,
    Actor,
    Envelope,
    Metadata,
    UnknownMessageType,
    account_stream,
    account_user_id,
    derived_id,
    new_envelope,
    parse_envelope,
    plan_stream,
    promo_stream,
)
from schemas.events import *  # noqa: F401,F403
from schemas.events import EVENT_TYPES, AppliedPromo, CommandOutcome, Event, PaymentMethod
from schemas.receipts import Receipt, ReceiptItem

__all__ = [
    "MAX_MINOR", "Money", "Payload", "StrictModel", "UtcDatetime", "COMMAND_TYPES", "EVENT_TYPES", "Command", "Event",
    "Customer", "PAYLOAD_TYPES", "SYSTEM", "Actor", "Envelope", "Metadata", "UnknownMessageType",
    "account_stream", "account_user_id", "derived_id", "new_envelope", "parse_envelope", "plan_stream", "promo_stream",
    "CommandOutcome", "PaymentMethod", "AppliedPromo", "Receipt", "ReceiptItem",
] + [c.__name__ for c in COMMAND_TYPES] + [e.__name__ for e in EVENT_TYPES]
