"""Building blocks every contract shares: strict models, money, UTC timestamps.

Contracts cross process and language boundaries, so they are strict: unknown fields are
rejected, money is a decimal with exactly two places plus an ISO 4217 currency, and every
timestamp carries a timezone and is normalised to UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

CENT = Decimal("0.01")


class StrictModel(BaseModel):
    """A frozen model that rejects unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a timezone")
    return value.astimezone(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_to_utc)]
"""A timezone-aware timestamp, stored and sent in UTC."""


MAX_MINOR = 10**12
"""Amounts stay below 10^12 minor units (10 000 000 000.00): far above any real charge (YooKassa's own
limit is lower), far below what a 28-digit decimal context, a bigint column or a float in JSON tooling
could lose."""
_MAX_AMOUNT = Decimal(MAX_MINOR) / 100


def _check_magnitude(value: Decimal) -> None:
    """Refuse NaN, Infinity and amounts from MAX_MINOR up, using comparisons only (they cannot overflow)."""
    if not value.is_finite():
        raise ValueError("amount must be finite")
    if value.copy_abs() >= _MAX_AMOUNT:
        raise ValueError(f"amount is too large: the maximum is {_MAX_AMOUNT - CENT}")


class Money(StrictModel):
    """An amount with exactly two decimal places and a currency; `"299.00"`, `"RUB"` on the wire."""

    # The one place money is parsed: every input path (API bodies, admin forms, stored events)
    # refuses the same things with a pydantic ValidationError, never decimal.InvalidOperation (a
    # 500): floats, booleans, NaN/Infinity, more than two places, negatives, and anything from
    # MAX_MINOR minor units up ("1e30", forty nines), checked before any arithmetic can overflow.
    # (A comment, not the docstring: the docstring is exported into every schemas/json file.)

    amount: Decimal = Field(examples=["299.00"])
    currency: str = Field(default="RUB", pattern=r"^[A-Z]{3}$", examples=["RUB"])

    @field_validator("amount", mode="before")
    @classmethod
    def _decimal_from_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("money must be a decimal string such as '299.00', not a boolean")
        if isinstance(value, float):
            raise ValueError("money must be a decimal string such as '299.00', not a float")
        if isinstance(value, int):
            value = Decimal(value)
        elif isinstance(value, str):
            try:
                value = Decimal(value)
            except InvalidOperation as exc:
                raise ValueError(f"not a decimal amount: {value!r}") from exc
        if isinstance(value, Decimal):
            _check_magnitude(value)  # before pydantic's own Decimal checks and any quantize: both can overflow
        return value

    @field_validator("amount")
    @classmethod
    def _two_places(cls, value: Decimal) -> Decimal:
        _check_magnitude(value)
        if value != value.quantize(CENT, rounding=ROUND_DOWN):
            raise ValueError("amount must have at most two decimal places")
        if value < 0:
            raise ValueError("amount must not be negative")
        return value.quantize(CENT) + 0  # `+ 0` turns "-0.00" into "0.00"

    @classmethod
    def from_minor(cls, minor: int, currency: str = "RUB") -> "Money":
        """Build from integer minor units (kopecks), the internal representation."""
        return cls(amount=(Decimal(minor) / 100).quantize(CENT), currency=currency)

    @property
    def minor(self) -> int:
        """The amount in integer minor units (kopecks)."""
        return int(self.amount * 100)

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


class Payload(StrictModel):
    """Base of every command and event payload; the class name is the message type."""

    kind: ClassVar[str] = "payload"
    schema_version: ClassVar[int] = 1

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__
