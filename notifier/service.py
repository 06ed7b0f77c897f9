"""The notifier's handlers: one Kafka record in, at most one email out, nothing lost.

`handle(record)` is the ConsumerLoop handler; `run_retrier()` is the background task that sends
parked emails. The order of writes around the send is the whole at-most-once argument
(docs/decisions/0070):

1. render the email (a payload the templates cannot render → dead-letter topic, done);
2. COMMIT the row as `sending`, with a claim and a lease;
3. call Mailgun (bounded retries);
4. COMMIT `sent` (or `parked` for a later retry, or `dead` + dead-letter topic).

A redelivered event whose row is `sent`, `dead` or `parked` is not sent from the consumer; only a
`sending` row whose lease ran out (its sender crashed between 2 and 4) is sent again, with the
same Message-Id. Sends are serialised per process (`_send_lock`), so a crash can leave at most
ONE message in that state.

When Mailgun fails for longer than the in-loop budget, the email is parked in the table and the
consumer moves on (the partition keeps flowing); while Mailgun is known to be down (the breaker is
open), new emails are parked without trying. The retrier probes Mailgun with one parked email at
a time, with growing pauses; the first success closes the breaker and makes every parked email
due at once. An email still failing
`give_up_after_s` after its event arrived is dead-lettered with the reason.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka.structs import ConsumerRecord
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from infra.kafka import header
from infra.logging import get_logger
from schemas import Envelope, parse_envelope

from notifier.adapters.dead_letters import DeadLetters
from notifier.adapters.email_log import Claim, EmailLog, NewEmail
from notifier.adapters.mailgun import MailgunClient, MailgunError, OutgoingEmail, PermanentMailgunError, message_id_for
from notifier.config import NotifierSettings
from notifier.metrics import EMAIL_DEAD, EMAIL_PARKED, EMAIL_SENT
from notifier.domain.emails import (
    EVENT_TYPES_SKIPPED,
    EmailPlan,
    Facts,
    Skip,
    facts_key_for,
    facts_to_remember,
    plan_email,
)
from notifier.adapters.rendering import Renderer, RenderError

log = get_logger(__name__)


class MailgunHealth:
    """Per-process circuit breaker around Mailgun.

    A send that ran out of retries opens it. While open, the consumer parks new emails without
    calling Mailgun (one slow failure per outage, not one per email, so the partition keeps
    flowing) and only the retrier talks to Mailgun: one probe (a parked email) after a pause that
    grows with each failed probe (jittered, capped). The first success closes it.
    """

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0
        self.probe_at = 0.0

    def failed(self) -> None:
        self.failures += 1
        pause = min(self.max_s, self.initial_s * 2 ** (self.failures - 1))
        self.probe_at = time.monotonic() + pause * random.uniform(0.5, 1.0)

    def succeeded(self) -> bool:
        """Record a success; True when this ends an outage."""
        was_open = self.failures > 0
        self.failures = 0
        self.probe_at = 0.0
        return was_open

    @property
    def open(self) -> bool:
        return self.failures > 0

    def wait_before_probe_s(self) -> float:
        return max(0.0, self.probe_at - time.monotonic())


@dataclass
class Stats:
    sent: int = 0
    parked: int = 0
    dead: int = 0
    skipped: int = 0
    duplicates: int = 0
    resent_after_crash: int = 0


class Notifier:
    def __init__(
        self,
        *,
        email_log: EmailLog,
        mailgun: MailgunClient,
        renderer: Renderer,
        dead_letters: DeadLetters,
        config: NotifierSettings,
        mailgun_domain: str,
    ) -> None:
        self.log_store = email_log
        self.mailgun = mailgun
        self.renderer = renderer
        self.dead_letters = dead_letters
        self.config = config
        self.domain = mailgun_domain
        self.health = MailgunHealth(config.backoff_initial_s, config.backoff_max_s)
        self.stats = Stats()
        self._send_lock = asyncio.Lock()
        # The longest one send may take (retry budget + one attempt's hard timeout) plus a margin:
        # a live sender finishes long before its claim can be taken over.
        longest = max(config.inline_budget_s, config.retry_budget_s) + mailgun.timeout_s
        self.lease_s = longest + config.lease_margin_s

    # ------------------------------------------------------------------ consumer

    async def handle(self, record: ConsumerRecord) -> None:
        """Handle one record of the events topic (idempotent: redeliveries are expected)."""
        event_type = header(record, "type")
        if event_type in EVENT_TYPES_SKIPPED:
            self.stats.skipped += 1  # never emailed, no facts: not worth parsing
            return
        source = f"{record.topic}/{record.partition}/{record.offset}"
        try:
            envelope = parse_envelope(record.value)
        except Exception as exc:  # noqa: BLE001 - any unreadable payload is a poison event
            await self.dead_letters.send(record.value, record.key, reason=f"unreadable event: {exc}", kind="unreadable", source=source)
            self.stats.dead += 1
            return
        bound = log.bind(event_id=str(envelope.id), event_type=envelope.type)
        remembered = {fact.key: await self.log_store.remember(fact.key, fact.facts) for fact in facts_to_remember(envelope)}

        decision = plan_email(envelope)
        if isinstance(decision, EmailPlan):
            decision = plan_email(envelope, await self._facts(envelope, remembered))
        if isinstance(decision, Skip):
            self.stats.skipped += 1
            if "customer" in decision.reason:
                bound.warning("email_skipped", reason=decision.reason)
            else:
                bound.debug("email_skipped", reason=decision.reason)
            return

        try:
            rendered = self.renderer.render(decision)
        except RenderError as exc:
            if (existing := await self.log_store.get(envelope.id)) is not None:  # rendered and handled before
                await self._redelivered(existing.status, existing.lease_expired, envelope, bound)
                return
            await self.dead_letters.send(
                record.value, record.key, reason=f"cannot render: {exc}", kind="render_failed", source=source, event_id=str(envelope.id)
            )
            self.stats.dead += 1
            EMAIL_DEAD.inc()
            return

        outgoing = OutgoingEmail(
            to=decision.to,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            message_id=message_id_for(envelope.id, self.domain),
            tag=decision.kind,
            variables={k: v for k, v in {"event_id": str(envelope.id), "user_id": decision.user_id or "", "kind": decision.kind}.items() if v},
        )
        new = NewEmail(
            event_id=envelope.id,
            event_type=envelope.type,
            kind=decision.kind,
            user_id=decision.user_id,
            recipient=decision.to,
            locale=decision.locale,
            message_id=outgoing.message_id,
            message=outgoing.to_dict(),
            event=bytes(record.value or b""),
            event_key=record.key,
            source=source,
        )
        # Insert first: the row's primary key is the event id, so a redelivered event conflicts and
        # only then is its row read (one statement per new email instead of a read and an insert).
        if self.health.open:
            if await self.log_store.create_parked(new, "Mailgun is down; parked without trying"):
                self.stats.parked += 1
                EMAIL_PARKED.inc()
                bound.info("email_parked", kind=decision.kind, reason="mailgun_down")
                return
        else:
            claim = await self.log_store.create_sending(new, self.lease_s)
            if claim is not None:
                await self._deliver(claim, self.config.inline_budget_s)
                return
        existing = await self.log_store.get(envelope.id)
        if existing is None:  # cannot happen (rows are never deleted); count it rather than guess
            self.stats.duplicates += 1
            return
        await self._redelivered(existing.status, existing.lease_expired, envelope, bound)

    async def _facts(self, envelope: Envelope, remembered: dict[str, dict[str, Any]]) -> Facts:
        """What earlier events (and this one, just remembered) told us about this email's subject."""
        key = facts_key_for(envelope)
        facts = (remembered[key] if key in remembered else await self.log_store.recall(key)) if key else {}
        if key and key.startswith("refund:"):  # refund emails also want the subscription's plan name
            subscription_id = getattr(envelope.data, "subscription_id", None)
            if subscription_id is not None:
                facts = {**await self.log_store.recall(f"subscription:{subscription_id}"), **facts}
        known = {name: facts.get(name) for name in ("plan_name", "period_days", "days_used", "days_in_period")}
        return Facts(**known, card_check=bool(facts.get("card_check")))

    async def _redelivered(self, status: str, lease_expired: bool, envelope: Envelope, bound: object) -> None:
        self.stats.duplicates += 1
        if status == "sending" and lease_expired:
            # The sender crashed between committing `sending` and recording the outcome: the one
            # case that may send again — with the same Message-Id.
            claim = await self.log_store.claim_stale(envelope.id, self.lease_s)
            if claim is not None:
                self.stats.resent_after_crash += 1
                log.warning("email_resending_after_crash", event_id=str(envelope.id), claims=claim.claims)
                await self._deliver(claim, self.config.inline_budget_s)
            return
        # sent / dead: done; parked: the retrier owns it; sending with a live lease: its sender does.
        log.info("email_already_handled", event_id=str(envelope.id), status=status)

    # ------------------------------------------------------------------ sending

    async def _deliver(self, claim: Claim, budget_s: float) -> str:
        """Send a claimed row and record the outcome; returns `sent`, `parked` or `dead`."""
        email = OutgoingEmail.from_dict(claim.message)
        bound = log.bind(event_id=str(claim.event_id), kind=claim.kind, message_id=claim.message_id)
        async with self._send_lock:  # one message in flight per process: the crash bound of 0070
            try:
                delivery = await self.mailgun.send(email, budget_s)
            except PermanentMailgunError as exc:
                attempts, detail = getattr(exc, "attempts", 1), str(exc)
                await self.dead_letters.send(
                    claim.event, claim.event_key, reason=str(exc), kind="mailgun_rejected", source=claim.source, event_id=str(claim.event_id)
                )
                await self._record(lambda: self.log_store.mark_dead(claim, detail, attempts))
                self.stats.dead += 1
                EMAIL_DEAD.inc()
                return "dead"
            except MailgunError as exc:
                attempts, detail = getattr(exc, "attempts", 1), str(exc)
                self.health.failed()
                age = await self.log_store.age_s(claim)
                if age >= self.config.give_up_after_s:
                    reason = f"Mailgun unavailable for {age:.0f}s (limit {self.config.give_up_after_s:.0f}s): {exc}"
                    await self.dead_letters.send(
                        claim.event, claim.event_key, reason=reason, kind="mailgun_unavailable", source=claim.source, event_id=str(claim.event_id)
                    )
                    await self._record(lambda: self.log_store.mark_dead(claim, reason, attempts))
                    self.stats.dead += 1
                    EMAIL_DEAD.inc()
                    return "dead"
                delay = self._park_delay(claim.attempts + attempts)
                await self._record(lambda: self.log_store.mark_parked(claim, detail, delay, attempts))
                self.stats.parked += 1
                EMAIL_PARKED.inc()
                bound.warning("email_parked", attempts=claim.attempts + attempts, retry_in_s=round(delay, 2), error=str(exc))
                return "parked"
            recorded = await self._record(lambda: self.log_store.mark_sent(claim, delivery.provider_id, delivery.attempts))
        self.stats.sent += 1
        EMAIL_SENT.inc()
        bound.info("email_sent", to_domain=email.to.rpartition("@")[2], attempts=delivery.attempts, provider_id=delivery.provider_id, recorded=recorded)
        if self.health.succeeded():
            due = await self.log_store.make_parked_due()
            log.info("mailgun_recovered", parked_now_due=due)
        return "sent"

    async def _record(self, write: Callable[[], Awaitable[bool]]) -> bool:
        """Write an outcome, retrying for a few seconds on database errors: a lost `sent` means a resend.

        If it still fails, the error propagates and the row stays `sending`: after its lease the
        retrier sends it again with the same Message-Id (the bound of 0070 counts this as a crash).
        """
        retrying = AsyncRetrying(
            stop=stop_after_delay(10),
            wait=wait_exponential(multiplier=0.1, max=2),
            retry=retry_if_exception_type(Exception),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                ok = await write()
        if not ok:
            log.error("email_claim_lost", note="another sender took the row over; its outcome stands")
        return bool(ok)

    def _park_delay(self, attempts: int) -> float:
        base = min(self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** max(0, attempts - 1))
        return random.uniform(base / 2, base)

    # ------------------------------------------------------------------ retrier

    async def run_retrier(self, stop: asyncio.Event) -> None:
        """Send parked emails and take over crashed senders' rows, until `stop` is set."""
        log.info("retrier_started", lease_s=self.lease_s)
        while not stop.is_set():
            try:
                pause = self.health.wait_before_probe_s()
                if pause > 0:
                    await _sleep_or_stop(stop, min(pause, self.config.retry_poll_s))
                    continue
                claim = await self.log_store.claim_next_due(self.lease_s)
                if claim is None:
                    await _sleep_or_stop(stop, self.config.retry_poll_s)
                    continue
                log.info("email_retrying", event_id=str(claim.event_id), claims=claim.claims, attempts=claim.attempts)
                await self._deliver(claim, self.config.retry_budget_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the retrier must outlive database or broker hiccups
                log.error("retrier_error", error=repr(exc), exc_info=exc)
                await _sleep_or_stop(stop, self.config.retry_poll_s)
        log.info("retrier_stopped")



async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), max(0.01, seconds))
    except TimeoutError:
        pass
