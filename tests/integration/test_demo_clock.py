"""The demo moves business time and acts at once: every service's clock must already show it.

Each shiftable clock re-reads the shared offset every OFFSET_REFRESH_S; the demo once cancelled
within that half second and the processor refunded for 1 day used while the API had quoted 11.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from yookassa import Payment

from devstack import demo
from sandbox.yookassa import cards
from tests.support.yookassa_params import payment_params
from infra.clock import ShiftableClock, read_offset
from infra.db import create_engine


async def test_a_shift_is_seen_by_every_running_clock_when_the_demo_goes_on(fresh_database, monkeypatch) -> None:
    settings = fresh_database(migrate=True, prefix="democlock")
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    engine = create_engine(settings, pool_size=1)
    clock = ShiftableClock(engine)  # as the processor runs it: refreshed in the background
    await clock.start()
    try:
        for days in (10, 3):
            before = await read_offset(engine)
            await asyncio.to_thread(demo._shift_days, days)
            assert clock.offset == before + timedelta(days=days), "a service still runs on the old business time"
        await asyncio.to_thread(demo._shift_days, None)
        assert clock.offset == timedelta(0)
    finally:
        await clock.stop()
        await engine.dispose()


def test_the_recovery_steps_find_the_saved_card_and_pay_on_the_page(yookassa_sandbox, monkeypatch) -> None:
    """The demo's past-due recovery helpers against the real sandbox: find the card a paid
    subscription saved, and pay a page as a person would (the demo itself needs the whole stack)."""
    monkeypatch.setattr(demo, "YOOKASSA", yookassa_sandbox.url)
    yookassa_sandbox.configure_sdk()
    subscription_id = str(uuid.uuid4())
    params = payment_params("299.00", save_payment_method=True, metadata={"subscription_id": subscription_id})
    first = Payment.create(params, str(uuid.uuid4()))
    assert demo._pay_page(first.confirmation.confirmation_url, demo.SUCCESS_CARD) == 200
    card = demo._saved_card(subscription_id)
    assert card == yookassa_sandbox.payment(first.id)["payment_method"]["id"]
    with pytest.raises(demo.DemoError):
        demo._saved_card(str(uuid.uuid4()))
    second = Payment.create({**params, "save_payment_method": False}, str(uuid.uuid4()))
    demo._pay_page(second.confirmation.confirmation_url, cards.DECLINE_BY_REASON["insufficient_funds"])
    assert yookassa_sandbox.payment(second.id)["status"] == "canceled"
