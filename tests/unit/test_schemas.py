"""The contracts: strictness, money, UTC, the exported JSON Schema and upcasting."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

import schemas as s
from schemas.export import JSON_DIR, render_all

META = s.Metadata(correlation_id="corr-1", actor=s.Actor(kind="user", id="u1"))


def test_money_keeps_two_places_and_serialises_as_string() -> None:
    money = s.Money(amount="1490.5", currency="RUB")
    assert money.amount == Decimal("1490.50")
    assert money.model_dump(mode="json") == {"amount": "1490.50", "currency": "RUB"}
    assert money.minor == 149050
    assert s.Money.from_minor(29900) == s.Money(amount="299.00")


@pytest.mark.parametrize(
    "amount, currency",
    [("1.005", "RUB"), (1.5, "RUB"), ("-1.00", "RUB"), ("abc", "RUB"), ("1.00", "rub"), ("1.00", "RUBL"), ("NaN", "RUB")],
)
def test_money_rejects_what_is_not_money(amount: object, currency: str) -> None:
    with pytest.raises(ValidationError):
        s.Money(amount=amount, currency=currency)


@pytest.mark.parametrize(
    "amount",
    [
        "1e30", "9" * 40, "1E+100", "-1e30", 10**40, Decimal("1e30"),  # overflow the two-place quantize
        "Infinity", "-Infinity", "inf", "sNaN", "NaN", Decimal("NaN"),  # not a number at all
        "10000000000.00", 10**10,  # 10^12 minor units: above the maximum
        "1e-30", "0.001", "1.5e-3",  # below a kopeck
        True,  # a JSON boolean is not money
    ],
)
def test_money_refuses_absurd_amounts_with_a_validation_error(amount: object) -> None:
    """Every malformed amount is a pydantic ValidationError (a 422 / form error), never InvalidOperation (a 500)."""
    with pytest.raises(ValidationError) as caught:
        s.Money(amount=amount)
    assert "amount" in str(caught.value)


@pytest.mark.parametrize(
    "amount, wire",
    [("9999999999.99", "9999999999.99"), ("1E+2", "100.00"), ("0", "0.00"), ("-0", "0.00"), ("0.10", "0.10"),
     (7, "7.00"), (Decimal("1.5"), "1.50")],
)
def test_money_accepts_every_sane_amount_up_to_the_maximum(amount: object, wire: str) -> None:
    assert s.Money(amount=amount).model_dump(mode="json")["amount"] == wire
    assert s.Money.from_minor(s.MAX_MINOR - 1).amount == Decimal("9999999999.99")


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        s.CancelSubscription(subscription_id=uuid.uuid4(), mode="refund_now", surprise=1)


def test_naive_timestamps_are_rejected_and_others_become_utc() -> None:
    sub = uuid.uuid4()
    with pytest.raises(ValidationError, match="timezone"):
        s.RenewSubscription(subscription_id=sub, period_end=datetime(2026, 1, 1))
    msk = timezone(timedelta(hours=3))
    cmd = s.RenewSubscription(subscription_id=sub, period_end=datetime(2026, 1, 1, 3, tzinfo=msk))
    assert cmd.period_end == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert cmd.period_end.tzinfo == timezone.utc


def test_envelope_round_trips_through_json_with_a_typed_payload() -> None:
    payload = s.PurchaseSubscription(
        subscription_id=uuid.uuid4(), plan_id="monthly", customer=s.Customer(email="anna@example.com", locale="en")
    )
    envelope = s.new_envelope(payload, stream_id=s.account_stream("u1"), metadata=META)
    parsed = s.parse_envelope(envelope.to_json())
    assert parsed == envelope
    assert isinstance(parsed.data, s.PurchaseSubscription)
    assert parsed.user_id == "u1"


def test_envelope_rejects_unknown_types_and_mismatched_payloads() -> None:
    envelope = s.new_envelope(s.PlanArchived(plan_id="p", reason="old"), stream_id="plan-p", metadata=META).to_dict()
    with pytest.raises(ValidationError, match="unknown message type"):
        s.parse_envelope({**envelope, "type": "DropTables"})
    with pytest.raises(ValidationError):
        s.parse_envelope({**envelope, "type": "PlanCreated"})
    with pytest.raises(ValueError, match="not JSON"):
        s.parse_envelope(b"{nope")


def test_customer_email_is_checked() -> None:
    with pytest.raises(ValidationError):
        s.Customer(email="not-an-email")


def test_plan_created_v1_is_upcast_to_money() -> None:
    v1 = {
        "id": str(uuid.uuid4()),
        "type": "PlanCreated",
        "schema_version": 1,
        "occurred_at": "2025-01-01T00:00:00Z",
        "stream_id": "plan-monthly",
        "data": {"plan_id": "monthly", "name": "Monthly", "price_kopecks": 29900, "currency": "RUB", "period_days": 30},
        "metadata": META.model_dump(mode="json"),
    }
    parsed = s.parse_envelope(v1)
    assert parsed.schema_version == 2
    assert parsed.data.price == s.Money(amount="299.00", currency="RUB")


def test_a_version_newer_than_the_code_is_an_error() -> None:
    raw = s.new_envelope(s.PlanArchived(plan_id="p"), stream_id="plan-p", metadata=META).to_dict()
    with pytest.raises(ValidationError, match="newer"):
        s.parse_envelope({**raw, "schema_version": 7})


def test_exported_json_schema_is_up_to_date() -> None:
    for rel, text in render_all().items():
        path = JSON_DIR / rel
        assert path.exists(), f"{rel} missing: run python -m schemas.export"
        assert path.read_text() == text, f"{rel} is stale: run python -m schemas.export"


def test_derived_ids_are_stable() -> None:
    assert s.derived_id("renewal", "sub", "2026-01-01") == s.derived_id("renewal", "sub", "2026-01-01")
    assert s.derived_id("renewal", "sub", "2026-01-01") != s.derived_id("renewal", "sub", "2026-02-01")
