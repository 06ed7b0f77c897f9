"""A promo code's usage limit across accounts, against the real PostgreSQL event store and the
YooKassa sandbox (docs/decisions/0121).

Two users' purchases race for a code's last use: both read the code's stream at the same version
and decide to hold the use; a barrier makes them append at the same moment. The code stream's
expected version lets exactly one commit; the other's whole transaction (its account events too)
is refused, it re-reads and is rejected `promo_code_exhausted`. A redelivered winner never counts
twice; a declined checkout frees its use for the next customer.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import schemas as s
from eventstore.store import EventStore
from infra.clock import SystemClock
from payment_processor.adapters.gateway import YooKassaGateway
from payment_processor.config import ProcessorSettings
from payment_processor.handlers import CommandHandler
from sandbox.yookassa import cards

CUSTOMER = s.Customer(email="buyer@example.com", locale="en")
OPERATOR = s.Actor(kind="admin", id="op")


@pytest.fixture(scope="module")
async def engine(fresh_database):
    from infra.db import create_engine

    eng = create_engine(fresh_database(migrate=True, prefix="promo"), pool_size=10, application_name="promo-tests")
    yield eng
    await eng.dispose()


@pytest.fixture
async def gateway(yookassa_sandbox):
    gw = YooKassaGateway(
        shop_id=yookassa_sandbox.shop_id, secret_key=yookassa_sandbox.secret_key, api_url=yookassa_sandbox.api_url,
        timeout_s=5.0, max_concurrency=8,
    )
    yield gw
    await gw.aclose()


class RacingHandler(CommandHandler):
    """The real handler; its first append that holds a code's use waits until every racer decided (so
    all decided on the same version of the code's stream), then for the racer before it to commit:
    the worst interleaving, made certain."""

    def __init__(self, *args: Any, barrier: asyncio.Barrier, after: asyncio.Event | None, done: asyncio.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.barrier, self.after, self.done, self.waited = barrier, after, done, False

    async def _append(self, conn, state, command, emits, *, promo=None):  # type: ignore[override]
        if promo is None or self.waited:
            return await super()._append(conn, state, command, emits, promo=promo)
        self.waited = True
        await self.barrier.wait()
        if self.after is not None:
            await self.after.wait()
        try:
            return await super()._append(conn, state, command, emits, promo=promo)
        finally:
            self.done.set()


def _racers(engine, gateway, n: int = 2) -> list[CommandHandler]:
    barrier, done = asyncio.Barrier(n), [asyncio.Event() for _ in range(n)]
    return [_handler(engine, gateway, barrier=barrier, after=done[i - 1] if i else None, done=done[i]) for i in range(n)]


def _handler(engine, gateway, **race: Any) -> CommandHandler:
    kwargs: dict[str, Any] = dict(
        engine=engine, gateway=gateway, clock=SystemClock(), config=ProcessorSettings(janitor_schedule_s=[1, 1, 1]),
        default_return_url="http://shop.example/return",
    )
    return RacingHandler(**race, **kwargs) if race else CommandHandler(**kwargs)


def _command(payload: s.Command, stream_id: str, actor: s.Actor) -> s.Envelope:
    cid = uuid.uuid4()
    meta = s.Metadata(correlation_id=f"test-{cid}", command_id=cid, actor=actor)
    return s.new_envelope(payload, stream_id=stream_id, metadata=meta, id=cid)


async def _setup(handler: CommandHandler, *, max_redemptions: int) -> tuple[str, str]:
    plan_id = f"p{uuid.uuid4().hex[:12]}"
    await handler.handle(_command(s.CreatePlan(plan_id=plan_id, name="Basic", price=s.Money(amount="299.00"), period_days=30),
                                  s.plan_stream(plan_id), OPERATOR))
    code = f"RACE{uuid.uuid4().hex[:8].upper()}"
    create = s.CreatePromoCode(code=code, percent_off=10, periods=1, max_redemptions=max_redemptions,
                               expires_at=datetime.now(timezone.utc) + timedelta(days=1), reason="race test")
    await handler.handle(_command(create, s.promo_stream(code), OPERATOR))
    return plan_id, code


def _purchase(user: str, plan_id: str, code: str) -> s.Envelope:
    sub = uuid.uuid4()
    payload = s.PurchaseSubscription(subscription_id=sub, plan_id=plan_id, customer=CUSTOMER, promo_code=code)
    return _command(payload, s.account_stream(user), s.Actor(kind="user", id=user))


async def _data(store: EventStore, stream_id: str, type_name: str) -> list[Any]:
    return [e.envelope().data for e in await store.read_stream(stream_id) if e.type == type_name]


async def test_two_users_race_for_the_last_use_and_exactly_one_gets_it(engine, gateway, yookassa_sandbox) -> None:
    store = EventStore(engine)
    plan_id, code = await _setup(_handler(engine, gateway), max_redemptions=1)
    first, second = _racers(engine, gateway)
    users = [f"user-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    commands = [_purchase(users[0], plan_id, code), _purchase(users[1], plan_id, code)]
    await asyncio.wait_for(asyncio.gather(first.handle(commands[0]), second.handle(commands[1])), 60)

    # the second decided on the version before the first's use, appended after it committed: refused
    assert (first.conflicts, second.conflicts) == (0, 1)
    checkouts = {u: await _data(store, s.account_stream(u), "CheckoutStarted") for u in users}
    rejected = {u: await _data(store, s.account_stream(u), "CommandRejected") for u in users}
    winners = [u for u in users if checkouts[u]]
    assert winners == users[:1], checkouts
    loser = users[1]
    assert [r.code for r in rejected[loser]] == ["promo_code_exhausted"] and checkouts[loser] == []
    (checkout,) = checkouts[winners[0]]
    assert checkout.amount == s.Money(amount="269.10") and checkout.promo.discount == s.Money(amount="29.90")
    redeemed = await _data(store, s.promo_stream(code), "PromoCodeRedeemed")
    assert [(r.user_id, r.payment_id) for r in redeemed] == [(winners[0], checkout.payment_id)]
    remote = await yookassa_sandbox.apayments({"subscription_id": str(checkout.subscription_id)})
    assert [p["amount"]["value"] for p in remote] == ["269.10"]

    # the winner's command delivered again (a rebalance): nothing more, on either stream
    winner_command = commands[users.index(winners[0])]
    before = (len(await store.read_stream(s.account_stream(winners[0]))), len(await store.read_stream(s.promo_stream(code))))
    await _handler(engine, gateway).handle(winner_command)
    after = (len(await store.read_stream(s.account_stream(winners[0]))), len(await store.read_stream(s.promo_stream(code))))
    assert after == before

    # the winner's card is declined: the use is released, and the other user can now have it
    created = (await _data(store, s.account_stream(winners[0]), "PaymentCreated"))[0]
    await yookassa_sandbox.apay(created.provider_payment_id, cards.DECLINE_INSUFFICIENT_FUNDS)
    sync = s.SyncPayment(payment_id=created.payment_id)
    handler = _handler(engine, gateway)
    await handler.handle(_command(sync, s.account_stream(winners[0]), s.Actor(kind="system", id="janitor")))
    released = await _data(store, s.promo_stream(code), "PromoCodeReleased")
    assert [(r.user_id, r.payment_id) for r in released] == [(winners[0], created.payment_id)]
    await handler.handle(_purchase(loser, plan_id, code))
    assert len(await _data(store, s.account_stream(loser), "CheckoutStarted")) == 1
    assert len(await _data(store, s.promo_stream(code), "PromoCodeRedeemed")) == 2


async def test_one_user_twice_at_once_uses_a_code_once(engine, gateway) -> None:
    """Two purchases of one user at once (two plans, two handlers): the account's and the code's
    versions both guard it; the second is refused `promo_code_already_used`."""
    store = EventStore(engine)
    setup = _handler(engine, gateway)
    plan_a, code = await _setup(setup, max_redemptions=10)
    plan_b = f"p{uuid.uuid4().hex[:12]}"
    await setup.handle(_command(s.CreatePlan(plan_id=plan_b, name="Other", price=s.Money(amount="99.00"), period_days=7),
                                s.plan_stream(plan_b), OPERATOR))
    user = f"user-{uuid.uuid4().hex[:10]}"
    first, second = _racers(engine, gateway)
    await asyncio.wait_for(asyncio.gather(first.handle(_purchase(user, plan_a, code)), second.handle(_purchase(user, plan_b, code))), 60)
    stream = s.account_stream(user)
    assert len(await _data(store, stream, "CheckoutStarted")) == 1
    assert [r.code for r in await _data(store, stream, "CommandRejected")] == ["promo_code_already_used"]
    assert len(await _data(store, s.promo_stream(code), "PromoCodeRedeemed")) == 1
