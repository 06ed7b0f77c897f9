"""The scheduler: subscriptions that continue by themselves and end cleanly.

Every few seconds it finds what is due in `processor.schedule` (the processor's own table, kept
in step with the account streams — see `payment_processor/adapters/schedule.py`) and publishes a
command to `billing.commands` for each, exactly as a user's command would travel:

* RenewSubscription `RENEWAL_LEAD` before the period end of a subscription that renews, and at
  each dunning retry (`PROCESSOR_DUNNING_RETRY_DAYS`) while it is past due;
* ExpireSubscription at the period end of one that does not renew (auto-renew off, no saved card,
  canceled at period end) and after the last failed renewal attempt;
* SendExpiryReminder `EXPIRY_REMINDER_LEAD` before the end of one that does not renew;
* AnnouncePriceChange, once per (subscription, plan price change), as soon as a change that is
  not grandfathered is scheduled for the plan a live subscription renews on (the processor fixes
  the first renewal at the new price; docs/decisions/0120).

It never writes state and never talks to YooKassa. Its safety rests on the command ids: a
renewal is `derived_id("renewal", subscription_id, period_end, attempt)`, so two schedulers, a
restart after publishing or a republished command all produce the SAME command, which the
processor handles once (its handled-command record and the stream version make the second a
no-op); and a charge for a period that was renewed meanwhile is refused by the decision itself
(the period end no longer matches). Rows are locked with SKIP LOCKED, so several schedulers share
the work instead of repeating it. All time comes from the injected clock.

Runs inside `python -m payment_processor` (next to the consumer and the janitor) unless
`PROCESSOR_SCHEDULER_ENABLED=false`; `python -m payment_processor.scheduler run` runs it alone and
`python -m payment_processor.scheduler rebuild` fills the table from the event store (both built
by `payment_processor.bootstrap`). Its settings are the processor's `PROCESSOR_SCHEDULER_*`,
`PROCESSOR_RENEWAL_LEAD_S` and `PROCESSOR_EXPIRY_REMINDER_LEAD_S`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.clock import Clock
from infra.logging import get_logger
from payment_processor.config import ProcessorSettings
from payment_processor.metrics import ACTIONS, SCHEDULED, SCHEDULER_DUE
from payment_processor.adapters.schedule import DueAction, DueNotice, lock_due, lock_due_notices, mark_notices_sent, mark_sent
from payment_processor.entrypoints.ticker import CommandTicker
from schemas import (
    Actor,
    AnnouncePriceChange,
    Command,
    Envelope,
    ExpireSubscription,
    Metadata,
    RenewSubscription,
    SendExpiryReminder,
    derived_id,
    new_envelope,
)

log = get_logger(__name__)
SCHEDULER = Actor(kind="system", id="scheduler")


# --------------------------------------------------------------------------- commands (pure)


def renewal_command_id(subscription_id: object, period_end: datetime, attempt: int) -> object:
    """The contract's renewal id: one per (subscription, period, attempt), whoever computes it."""
    return derived_id("renewal", subscription_id, period_end.isoformat(), attempt)


def expiry_reason(due: DueAction) -> str:
    """Why a subscription ends: a code the notifier turns into a sentence."""
    if due.dunning_over:
        return "dunning_exhausted"
    if due.cancel_at_period_end:
        return "canceled_at_period_end"
    if not due.auto_renew:
        return "auto_renew_off"
    if not due.has_saved_method:
        return "no_payment_method"
    return "period_ended"


def command_for(due: DueAction, now: datetime) -> Envelope:
    """The deterministic command for a due action (same action, same id, every time)."""
    end = due.period_end.isoformat()
    payload: Command
    if due.action in ("renew", "retry"):
        command_id = renewal_command_id(due.subscription_id, due.period_end, due.attempt)
        payload = RenewSubscription(subscription_id=due.subscription_id, period_end=due.period_end, attempt=due.attempt)
    elif due.action == "expire":
        parts: tuple[object, ...] = (due.subscription_id, end) if due.round <= 1 else (due.subscription_id, end, due.round)
        command_id = derived_id("expiry", *parts)
        payload = ExpireSubscription(subscription_id=due.subscription_id, period_end=due.period_end, reason=expiry_reason(due))
    elif due.action == "remind":
        parts = (due.subscription_id, end) if due.round <= 1 else (due.subscription_id, end, due.round)
        command_id = derived_id("expiry-reminder", *parts)
        payload = SendExpiryReminder(subscription_id=due.subscription_id, period_end=due.period_end)
    else:  # pragma: no cover - the SQL only yields the four actions
        raise ValueError(f"unknown scheduled action {due.action!r}")
    metadata = Metadata(
        correlation_id=f"scheduler:{due.subscription_id}",
        causation_id=f"{due.action}:{due.subscription_id}:{end}",
        command_id=command_id,  # type: ignore[arg-type]
        actor=SCHEDULER,
    )
    return new_envelope(payload, stream_id=due.stream_id, metadata=metadata, id=command_id, occurred_at=now)  # type: ignore[arg-type]


def price_notice_command_id(subscription_id: object, change_id: object) -> object:
    """One notice per (subscription, price change), whoever computes it and however often."""
    return derived_id("price-notice", subscription_id, change_id)


def notice_command_for(due: DueNotice, now: datetime) -> Envelope:
    """The deterministic AnnouncePriceChange for a subscription and a plan's price change."""
    command_id = price_notice_command_id(due.subscription_id, due.change_id)
    payload = AnnouncePriceChange(subscription_id=due.subscription_id, plan_id=due.plan_id, change_id=due.change_id)
    metadata = Metadata(
        correlation_id=f"scheduler:{due.subscription_id}",
        causation_id=f"price_notice:{due.subscription_id}:{due.change_id}",
        command_id=command_id,  # type: ignore[arg-type]
        actor=SCHEDULER,
    )
    return new_envelope(payload, stream_id=due.stream_id, metadata=metadata, id=command_id, occurred_at=now)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the loop


class Scheduler(CommandTicker):
    name = "scheduler"

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        producer: AIOKafkaProducer,
        commands_topic: str,
        clock: Clock,
        config: ProcessorSettings,
    ) -> None:
        super().__init__(engine=engine, producer=producer, commands_topic=commands_topic, clock=clock,
                         batch=config.scheduler_batch, tick_s=config.scheduler_tick_s)
        self.config = config

    async def run(self) -> None:
        log.info(
            "scheduler_started",
            tick_s=self.config.scheduler_tick_s,
            renewal_lead_s=self.config.renewal_lead_s,
            expiry_reminder_lead_s=self.config.expiry_reminder_lead_s,
        )
        await super().run()

    async def tick(self) -> int:
        """Publish one command per due action; returns how many were due."""
        now = self.clock.now()
        async with self.engine.begin() as conn:
            due = await lock_due(
                conn,
                now,
                renew_by=now + self.config.renewal_lead,
                remind_by=now + self.config.expiry_reminder_lead,
                resend_before=now - timedelta(seconds=self.config.scheduler_resend_s),
                limit=self.config.scheduler_batch,
            )
            notices = await lock_due_notices(conn, limit=self.config.scheduler_batch)
            found = dict.fromkeys(ACTIONS, 0)
            for action in due:
                found[action.action] = found.get(action.action, 0) + 1
            found["price_notice"] = len(notices)
            for name, count in found.items():
                SCHEDULER_DUE.labels(name).set(count)
            if not due and not notices:
                return 0
            commands = []
            for action in due:
                command = command_for(action, now)
                commands.append((command, action.user_id))
                log.info(
                    "scheduled_command",
                    action=action.action,
                    command_id=str(command.id),
                    subscription_id=str(action.subscription_id),
                    period_end=action.period_end.isoformat(),
                    attempt=action.attempt,
                    round=action.round,
                )
            for notice in notices:
                command = notice_command_for(notice, now)
                commands.append((command, notice.user_id))
                log.info("scheduled_command", action="price_notice", command_id=str(command.id),
                         subscription_id=str(notice.subscription_id), change_id=str(notice.change_id))
            # Published (and acknowledged) before the marks commit: a crash in between
            # republishes the very same command ids, which the processor handles once.
            await self.publish(commands)
            await mark_sent(conn, due, now)
            await mark_notices_sent(conn, notices, now)
        for name, count in found.items():
            if count:
                SCHEDULED.labels(name).inc(count)
        return len(due) + len(notices)
