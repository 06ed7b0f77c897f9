"""The command handler: load the stream → decide → append with the expected version → call
YooKassa → append what it answered. The place where "never charge twice" is enforced in I/O.

Order of work for a command that moves money (the crash-safety argument):

1. Read the account stream (and the plan's, for a purchase or a grant) and fold it into state.
2. `decide`. If the command already ended (its terminal event is in the stream) → nothing.
   If it recorded an intent before (a crash, a redelivery) → resume: the SAME provider step.
3. Append the intent (CheckoutStarted / RenewalStarted / RefundRequested) with the expected
   version, and open the operation for the janitor — one transaction. The Idempotence-Key and
   the whole request body are fixed by this event; no handled-command record yet.
4. Call YooKassa (off the event loop, with a timeout).
5. `resolve` and append the result together with the terminal event and its handled-command
   record — one transaction. A crash anywhere between 3 and 5 means a redelivery repeats step 4
   with the same key and body, so YooKassa returns the same payment: exactly one charge.

A `StreamVersionConflict` at any append means someone else wrote first: re-read and decide again
(never overwrite). If a step repeats after a conflict, YooKassa answers the same for the same key.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.clock import Clock
from infra.logging import get_logger
from eventstore.store import CommandAlreadyHandled, HandledCommand, StreamVersionConflict
from payment_processor.config import ProcessorSettings
from payment_processor import metrics
from payment_processor.adapters import journal
from payment_processor.domain import (
    AccountState,
    Context,
    Decision,
    Emit,
    PlanState,
    PromoState,
    account_emits,
    apply,
    apply_plan,
    apply_promo,
    build_account,
    build_plan,
    build_promo,
    command_id_of,
    decide,
    decide_plan,
    decide_promo,
    failed_command,
    operation_changes,
    promo_envelopes,
    resolve,
    terminal_outcome,
    to_envelopes,
)
from payment_processor.domain.provider import LEGACY_RECEIPT, ProviderStep, ReceiptSettings
from payment_processor.adapters.gateway import PaymentGateway
from schemas import (
    SYSTEM,
    Actor,
    AnnouncePriceChange,
    ArchivePlan,
    CreatePlan,
    CreatePromoCode,
    DeactivatePromoCode,
    Envelope,
    GrantSubscription,
    Metadata,
    Money,
    PayOverdueSubscription,
    PurchaseSubscription,
    RenewSubscription,
    SwitchPlan,
    SchedulePriceChange,
    account_user_id,
    derived_id,
    new_envelope,
    parse_envelope,
    plan_stream,
    promo_stream,
)

log = get_logger(__name__)

PLAN_COMMANDS = (CreatePlan, ArchivePlan, SchedulePriceChange)
PROMO_COMMANDS = (CreatePromoCode, DeactivatePromoCode)


class ProviderUnreachable(RuntimeError):
    """The command needs an answer from YooKassa that did not come: the consumer retries it."""


class TooManyConflicts(RuntimeError):
    """The stream kept moving under us; the consumer loop retries (then dead-letters)."""


# --------------------------------------------------------------------------- test-only crash points


_CRASH_ALIASES = {
    "after_checkout_started": "before_create_payment",
    "after_payment_created": "after_create_payment",
    "after_refund_requested": "before_create_refund",
    "after_refund_created": "after_create_refund",
}


class CrashPoints:
    """TEST-ONLY fault injection: `BILLING_CRASH_AT=<point>[,<point>]` makes the process
    SIGKILL itself when it reaches that point. With `BILLING_CRASH_ONCE_FILE`
    set, it fires only while that file does not exist (and creates it), so a restarted process
    with the same environment runs on. Points: `before_<step>` (the intent is committed, the
    provider not yet called) and `after_<step>` (the provider answered, nothing appended yet),
    where step is create_payment | find_payment | create_refund | find_refund; aliases:
    after_checkout_started, after_payment_created, after_refund_requested, after_refund_created.
    Never set these in production."""

    def __init__(self, points: Sequence[str] = (), once_file: str | None = None, action: Callable[[str], None] | None = None) -> None:
        self.points = {_CRASH_ALIASES.get(p.strip(), p.strip()) for p in points if p.strip()}
        self.once_file = Path(once_file) if once_file else None
        self.action = action or _exit_like_sigkill

    @classmethod
    def from_env(cls) -> CrashPoints:
        return cls(os.environ.get("BILLING_CRASH_AT", "").split(","), os.environ.get("BILLING_CRASH_ONCE_FILE") or None)

    def reached(self, point: str) -> None:
        if point not in self.points:
            return
        if self.once_file is not None:
            if self.once_file.exists():
                return
            self.once_file.write_text(point)
        log.warning("crash_point_reached", point=point)
        self.action(point)


def _exit_like_sigkill(point: str) -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no offset commit: a real crash
    os._exit(137)  # not reached


def _step_name(step: ProviderStep) -> str:
    return {"CreatePayment": "create_payment", "FindPayment": "find_payment", "CreateRefund": "create_refund", "FindRefund": "find_refund"}[
        type(step).__name__
    ]


# --------------------------------------------------------------------------- the handler


class CommandHandler:
    """Handles one command envelope at a time (many handlers may run concurrently on other streams)."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        gateway: PaymentGateway,
        clock: Clock,
        config: ProcessorSettings,
        default_return_url: str,
        crash_points: CrashPoints | None = None,
        db: asyncpg.Pool | None = None,
        receipts: ReceiptSettings = LEGACY_RECEIPT,
    ) -> None:
        self.engine = engine
        self.receipts = receipts
        self.db = db  # the hot path's asyncpg pool (journal.py); made from the engine's URL if not given
        self._own_db = db is None
        self._db_ready = asyncio.Lock()
        self.envelopes = journal.EnvelopeCache()
        self.gateway = gateway
        self.clock = clock
        self.config = config
        self.default_return_url = default_return_url
        self.crash = crash_points or CrashPoints()
        self.handled = 0
        self.conflicts = 0

    # ------------------------------------------------------------------ entry points

    async def handle_record_value(self, value: bytes | None) -> None:
        """The consumer's entry: a Kafka record's value (an Envelope JSON)."""
        if value is None:
            raise ValueError("empty command record")
        await self.handle(parse_envelope(value))

    async def handle(self, command: Envelope) -> None:
        """Handle one command until its effects are committed (or it is known to be handled)."""
        if command.data.kind != "command":
            log.warning("not_a_command_ignored", type=command.type, id=str(command.id))
            return
        for attempt in range(1, self.config.conflict_retries + 1):
            try:
                if isinstance(command.data, PLAN_COMMANDS):
                    await self._handle_plan_command(command)
                elif isinstance(command.data, PROMO_COMMANDS):
                    await self._handle_promo_command(command)
                else:
                    await self._handle_account_command(command)
                self.handled += 1
                return
            except StreamVersionConflict as exc:
                self.conflicts += 1
                log.info("stream_version_conflict", stream=exc.stream_id, attempt=attempt, command_id=str(command_id_of(command)))
                await asyncio.sleep(min(0.005 * attempt, 0.1))
            except CommandAlreadyHandled:
                return
        raise TooManyConflicts(f"{command.stream_id} kept changing while handling {command.id}")

    async def fail(
        self, command_id: UUID, command_type: str, stream_id: str, reason: str, *, correlation_id: str | None = None, actor: Actor = SYSTEM
    ) -> bool:
        """Append CommandFailed for a command given up on (dead-lettered).

        Returns False when the command had already ended or its stream is not one of ours.
        """
        if not (stream_id.startswith(("plan-", "promo-")) or account_user_id(stream_id)):
            log.error("failed_command_without_stream", command_id=str(command_id), stream=stream_id)
            return False
        db = await self._pool()
        for _ in range(self.config.conflict_retries):
            async with db.acquire() as conn:
                events = (await journal.load(conn, [stream_id], self.envelopes))[stream_id]
                state: AccountState | PlanState | PromoState = (
                    build_plan(stream_id, events) if stream_id.startswith("plan-")
                    else build_promo(stream_id, events) if stream_id.startswith("promo-")
                    else build_account(stream_id, events)
                )
                if command_id in state.terminal:
                    return False
                failed = failed_command(command_id, command_type, reason).payload
                envelope = new_envelope(
                    failed,
                    stream_id=stream_id,
                    metadata=Metadata(correlation_id=correlation_id or str(command_id), causation_id=str(command_id), command_id=command_id, actor=actor),
                    id=derived_id("event", command_id, state.events_per_command.get(command_id, 0)),
                    occurred_at=self.clock.now(),
                )
                handled = HandledCommand(command_id, command_type, terminal_outcome(failed))
                try:
                    await journal.commit(
                        conn, stream_id, state.version, [envelope], handled=[handled], changes=[], schedule_rows=[],
                        now=self.clock.now(), first_check_at=self.clock.now(),
                    )
                    metrics.command_outcome(command_type, "failed").inc()
                    log.error("command_failed", command_id=str(command_id), type=command_type, reason=reason)
                    return True
                except StreamVersionConflict:
                    continue
                except CommandAlreadyHandled:
                    return False
        raise TooManyConflicts(f"cannot record the failure of {command_id} on {stream_id}")

    # ------------------------------------------------------------------ plans

    async def _handle_plan_command(self, command: Envelope) -> None:
        expected_stream = plan_stream(command.data.plan_id)  # type: ignore[attr-defined]
        if command.stream_id != expected_stream:
            raise ValueError(f"{command.type} for {command.data.plan_id} arrived on {command.stream_id}")  # type: ignore[attr-defined]
        db = await self._pool()
        async with db.acquire() as conn:
            state = build_plan(command.stream_id, (await journal.load(conn, [command.stream_id], self.envelopes))[command.stream_id])
            decision = decide_plan(state, command, self._context(None))
            if decision.already_handled or not decision.events:
                return
            await self._append(conn, state, command, decision.events)
        self._log_end(command, decision.events)

    async def _handle_promo_command(self, command: Envelope) -> None:
        expected_stream = promo_stream(command.data.code)  # type: ignore[attr-defined]
        if command.stream_id != expected_stream:
            raise ValueError(f"{command.type} for {command.data.code} arrived on {command.stream_id}")  # type: ignore[attr-defined]
        db = await self._pool()
        async with db.acquire() as conn:
            state = build_promo(command.stream_id, (await journal.load(conn, [command.stream_id], self.envelopes))[command.stream_id])
            decision = decide_promo(state, command, Context(now=self.clock.now()))
            if decision.already_handled or not decision.events:
                return
            await self._append(conn, state, command, decision.events)
        self._log_end(command, decision.events)

    # ------------------------------------------------------------------ accounts

    async def _handle_account_command(self, command: Envelope) -> None:
        stream_id = command.stream_id
        if account_user_id(stream_id) is None:
            raise ValueError(f"{command.type} must go to an account stream, not {stream_id!r}")
        # The read, the decision and the first append on one pooled connection; the connection
        # goes back to the pool while YooKassa answers (a slow provider must not hold the
        # database's connections), and the expected version guards every append.
        db = await self._pool()
        plan: PlanState | None = None
        promo: PromoState | None = None
        async with db.acquire() as conn:
            streams = [stream_id]
            if isinstance(command.data, (PurchaseSubscription, GrantSubscription, AnnouncePriceChange, SwitchPlan)):
                streams.append(plan_stream(command.data.plan_id))
            if isinstance(command.data, PurchaseSubscription) and command.data.promo_code:
                # The code's stream, read in the same round trip: its version guards the use (0121).
                streams.append(promo_stream(command.data.promo_code))
            loaded = await journal.load(conn, streams, self.envelopes)
            state = build_account(stream_id, loaded[stream_id])
            if len(streams) > 1:
                plan = build_plan(streams[1], loaded[streams[1]])
            elif isinstance(command.data, (RenewSubscription, PayOverdueSubscription)):
                # Paying the next period (the renewal, or the customer now) under a scheduled
                # downgrade charges the new plan: its receipt settings come from its stream.
                sub = state.subscriptions.get(command.data.subscription_id)
                if sub is not None and sub.pending_switch is not None:
                    pending = plan_stream(sub.pending_switch.plan_id)
                    plan = build_plan(pending, (await journal.load(conn, [pending], self.envelopes))[pending])
            if len(streams) > 2:
                promo = build_promo(streams[2], loaded[streams[2]])
            decision = decide(state, command, self._context(plan, promo))
            if decision.already_handled:
                return
            if decision.events:
                await self._append(conn, state, command, decision.events, promo=promo)
        while True:
            self._log_end(command, decision.events)
            step = decision.step
            if step is None:
                return
            name = _step_name(step)
            self.crash.reached(f"before_{name}")
            outcome = await self.gateway.execute(step)
            self.crash.reached(f"after_{name}")
            decision = resolve(state, command, step, outcome, self._context(plan))
            if decision.retry_later:
                raise ProviderUnreachable(decision.retry_later)
            if decision.events:
                async with db.acquire() as conn:
                    await self._append(conn, state, command, decision.events)

    # ------------------------------------------------------------------ I/O helpers

    def _context(self, plan: PlanState | None, promo: PromoState | None = None) -> Context:
        return Context(
            now=self.clock.now(),
            plan=plan,
            promo=promo,
            default_return_url=self.default_return_url,
            dunning_retry_days=tuple(self.config.dunning_retry_days),  # type: ignore[arg-type]
            receipts=self.receipts,
            card_check_amount=Money(amount=self.config.card_check_amount),
            price_change_notice_days=self.config.price_change_notice_days,
        )

    async def _pool(self) -> asyncpg.Pool:
        if self.db is None:
            async with self._db_ready:
                if self.db is None:
                    url = self.engine.url.render_as_string(hide_password=False)
                    self.db = await journal.create_pool(url, size=self.config.db_pool_size)
        return self.db

    async def aclose(self) -> None:
        """Close the asyncpg pool if the handler made it."""
        if self._own_db and self.db is not None:
            await self.db.close()
            self.db = None

    async def _append(
        self,
        conn: asyncpg.Connection,
        state: AccountState | PlanState | PromoState,
        command: Envelope,
        emits: list[Emit],
        *,
        promo: PromoState | None = None,
    ) -> list[Envelope]:
        """Append the decided events with their handled-command records, open-operation changes
        and schedule rows, atomically; `state` has the events applied afterwards.

        The events are applied to `state` BEFORE the commit, so the scheduler's rows are read off
        it without a copy; if the commit fails, `handle()` re-reads the stream, so a state that
        ran ahead of the database is never used again.

        Events for a promo code's stream (a use held or released) go in first, in ONE transaction
        with the account's: a use is held at the code-stream version the decision read (`promo`), so
        a concurrent use of the same code makes one of them conflict and decide again (0121).
        """
        side = promo_envelopes(emits, command, self.clock.now())
        if side:
            async with conn.transaction():
                for side_stream, side_events in side.items():
                    await self._append_promo(conn, side_stream, side_events, promo)
                return await self._append(conn, state, command, account_emits(emits))
        now = self.clock.now()
        expected = state.version
        envelopes = to_envelopes(state, command, emits, now)
        handled = [
            HandledCommand(e.payload.command_id, e.payload.command_type, terminal_outcome(e.payload))  # type: ignore[attr-defined]
            for e in Decision(emits).terminals
        ]
        fold = apply_plan if isinstance(state, PlanState) else apply_promo if isinstance(state, PromoState) else apply
        for envelope in envelopes:
            fold(state, envelope)  # type: ignore[arg-type]
        delay = self.config.janitor_schedule_s[0] if self.config.janitor_schedule_s else self.config.janitor_repeat_s
        await journal.commit(
            conn,
            state.stream_id,
            expected,
            envelopes,
            handled=handled,
            changes=operation_changes(emits),
            schedule_rows=journal.schedule_rows_after(state, envelopes),
            now=now,
            first_check_at=now + timedelta(seconds=delay),
        )
        self.envelopes.put(envelopes)  # committed: now certainly what the table holds
        for record in handled:
            metrics.command_outcome(record.command_type, record.outcome["status"]).inc()
        for envelope in envelopes:
            renewal = metrics.RENEWAL_CHILDREN.get(envelope.type)
            if renewal is not None:
                renewal.inc()
        return envelopes

    async def _append_promo(self, conn: asyncpg.Connection, stream_id: str, envelopes: list[Envelope], decided_on: PromoState | None) -> None:
        """Append a code stream's events at the version the decision read — or, for a release (no
        limit to check), at the current one. Events already there (their ids derive from the
        checkout) are not appended again."""
        current = (await journal.load(conn, [stream_id], self.envelopes))[stream_id]
        have = {e.id for e in current}
        fresh = [e for e in envelopes if e.id not in have]
        if not fresh:
            return
        expected = decided_on.version if decided_on is not None and decided_on.stream_id == stream_id else len(current)
        # (not cached: the transaction has not committed yet; the next read decodes them)
        await journal.commit(conn, stream_id, expected, fresh, handled=[], changes=[], schedule_rows=[], now=self.clock.now(), first_check_at=self.clock.now())

    def _log_end(self, command: Envelope, emits: list[Emit]) -> None:
        for emit in Decision(emits).terminals:
            payload: Any = emit.payload
            if payload.type_name() == "CommandSucceeded":
                log.debug("command_succeeded", command_id=str(payload.command_id), type=payload.command_type)
            else:
                log.info(
                    "command_ended",
                    status=payload.type_name(),
                    command_id=str(payload.command_id),
                    type=payload.command_type,
                    code=getattr(payload, "code", None),
                    reason=payload.reason,
                )


def command_from_record_value(value: bytes | None) -> Envelope | None:
    """Best effort for a dead-lettered record: the envelope, or None if it cannot be parsed."""
    if value is None:
        return None
    try:
        return parse_envelope(value)
    except ValueError:
        return None


def identity_from_raw(value: bytes | None) -> tuple[UUID, str, str] | None:
    """(command id, type, stream id) from a record that does not parse as an envelope, if present."""
    if not value:
        return None
    try:
        raw = orjson.loads(value)
        return UUID(str(raw["id"])), str(raw.get("type") or "unknown"), str(raw["stream_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
