"""Command intake: Idempotency-Key → command envelope → Kafka (acks=all) → 202, or the outcome.

The order of steps is what keeps "never charge twice" true across retries and crashes:
1. claim the key (or replay / 409 / 422) — nothing is published twice *concurrently*;
2. derive the command id from (caller, key) — a retry after a lost response, a crash or a stale
   take-over publishes the *same* command, which the processor handles once; a key reused after
   its window is a new request and gets the key's next window id (see adapters/idempotency.py);
3. answer 202 only after Kafka acknowledged the record with acks=all, so an accepted command
   cannot be lost by the broker;
4. store the response for replay. With `Prefer: wait=N` the request first waits (bounded) for the
   command's terminal status in `read.commands` and answers that instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from command_api.config import ApiSettings
from command_api.adapters.idempotency import IdempotencyStore
from command_api.domain.idempotency import Claimed, InFlight, Mismatch, Replay, command_id_for, request_hash
from command_api.metrics import Metrics
from command_api.domain.problems import PROBLEM_JSON, ProblemError, problem_body, rejection_status
from command_api.adapters.read_models import ReadModels, Row
from command_api.adapters.watch import BatchedWatcher
from infra.clock import Clock
from infra.logging import get_logger
from schemas import Actor, Metadata, Payload, new_envelope

log = get_logger(__name__)

_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d{1,6})\"?", re.IGNORECASE)


def parse_prefer_wait(prefer: str | None, max_wait_s: float) -> float | None:
    """`Prefer: wait=5` (RFC 7240) → 5.0, capped at `max_wait_s`; None when absent or unreadable."""
    if not prefer:
        return None
    match = _WAIT.search(prefer)
    if not match:
        return None
    return min(float(match.group(1)), max_wait_s)


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who sends a command and how the request asked for it."""

    scope: str  # the caller's token subject: Idempotency-Keys and command ids are per caller
    key: str
    method: str
    path: str
    actor: Actor
    correlation_id: str
    wait_s: float | None


@dataclass(frozen=True, slots=True)
class Prepared:
    """The command to publish: payload, its stream and its Kafka key (user id or plan id)."""

    payload: Payload
    stream_id: str
    partition_key: str


Prepare = Callable[[uuid.UUID], Awaitable[Prepared]]


def status_body(command_id: uuid.UUID, command_type: str, row: Row | None = None) -> dict[str, Any]:
    """The `CommandStatus` document: from a `read.commands` row, or `accepted` without one."""
    if row is None:
        return {
            "command_id": str(command_id),
            "status": "accepted",
            "command_type": command_type,
            "outcome": None,
            "code": None,
            "reason": None,
        }
    outcome = row.get("outcome") or None
    if isinstance(outcome, dict):
        outcome = {k: v for k, v in outcome.items() if v is not None} or None
    else:
        outcome = None
    return {
        "command_id": str(row["command_id"]),
        "status": row["status"],
        "command_type": row.get("command_type") or command_type,
        "outcome": outcome,
        "code": row.get("code"),
        "reason": row.get("reason"),
    }


def outcome_response(body: dict[str, Any], instance: str) -> tuple[int, dict[str, Any], str]:
    """(status code, body, media type) for a command status answered to a POST."""
    status = body["status"]
    if status == "succeeded":
        return 200, body, "application/json"
    if status in ("rejected", "failed"):
        # problem+json's `status` is the HTTP code; the command's own status goes in `command_status`.
        extensions = {k: v for k, v in body.items() if k != "status"}
        code, slug, title = (rejection_status(body.get("code")), "command-rejected", "Command rejected") if status == "rejected" else (
            502, "command-failed", "Command failed")
        problem = problem_body(code, slug, title, body.get("reason") or status, instance, command_status=status, **extensions)
        return code, problem, PROBLEM_JSON
    return 202, body, "application/json"


class OutcomeWaiter:
    """Waits for commands to reach a terminal status in `read.commands` (one poller for all, see watch.py)."""

    def __init__(self, reads: ReadModels, interval_s: float = 0.05) -> None:
        self.reads = reads
        self._watcher: BatchedWatcher[uuid.UUID, Row] = BatchedWatcher(
            self._finished, name="command-outcome", interval_s=interval_s
        )

    async def _finished(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Row]:
        return {row["command_id"]: row for row in await self.reads.finished_commands(ids)}

    async def wait(self, command_id: uuid.UUID, timeout_s: float) -> Row | None:
        return await self._watcher.wait(command_id, _always, timeout_s)

    async def stop(self) -> None:
        await self._watcher.stop()


def _always(_: object) -> bool:
    return True


class CommandIntake:
    """Turns an authorised, validated request into exactly one published command."""

    def __init__(
        self,
        *,
        settings: ApiSettings,
        producer: AIOKafkaProducer,
        idempotency: IdempotencyStore,
        reads: ReadModels,
        waiter: OutcomeWaiter,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.idempotency = idempotency
        self.reads = reads
        self.waiter = waiter
        self.clock = clock
        self.metrics = metrics

    async def publish(self, payload: Payload, *, command_id: uuid.UUID, stream_id: str, partition_key: str,
                      actor: Actor, correlation_id: str) -> None:
        """Send one command envelope and wait for Kafka's acknowledgement (bounded)."""
        envelope = new_envelope(
            payload,
            stream_id=stream_id,
            id=command_id,
            occurred_at=self.clock.now(),
            metadata=Metadata(correlation_id=correlation_id, command_id=command_id, actor=actor),
        )
        headers = [
            ("correlation_id", correlation_id.encode()),
            ("command_id", str(command_id).encode()),
            ("type", envelope.type.encode()),
        ]
        started = time.perf_counter()
        try:
            await asyncio.wait_for(
                self.producer.send_and_wait(
                    self.settings.commands_topic, value=envelope.to_json(), key=partition_key.encode(), headers=headers
                ),
                self.settings.api_publish_timeout_s,
            )
        except (KafkaError, TimeoutError) as exc:
            self.metrics.publish_failures.inc()
            log.warning("command_publish_failed", command_id=str(command_id), error=repr(exc)[:300])
            raise ProblemError(
                503,
                "broker-unavailable",
                "Command not accepted",
                "the message broker did not acknowledge the command in time; retry with the same Idempotency-Key",
                headers={"Retry-After": "1"},
            ) from exc
        self.metrics.publish_latency.observe(time.perf_counter() - started)
        self.metrics.commands_published.labels(envelope.type).inc()
        log.info("command_published", command_id=str(command_id), type=envelope.type, stream_id=stream_id)

    async def submit(self, ctx: CommandContext, command_type: str, body: BaseModel, prepare: Prepare) -> Response:
        """The whole intake of one state-changing request; see the module docstring."""
        command_id = command_id_for(ctx.scope, ctx.key)
        stage = self.metrics.stage
        started = time.perf_counter()
        claim = await self.idempotency.claim(
            scope=ctx.scope,
            key=ctx.key,
            hash=request_hash(ctx.method, ctx.path, body),
            method=ctx.method,
            path=ctx.path,
            command_id=command_id,
            command_type=command_type,
        )
        if isinstance(claim, Replay):
            self.metrics.idempotency.labels("replayed").inc()
            media = PROBLEM_JSON if claim.status >= 400 else "application/json"
            return JSONResponse(
                claim.body, status_code=claim.status, headers={**claim.headers, "Idempotent-Replayed": "true"}, media_type=media
            )
        if isinstance(claim, Mismatch):
            self.metrics.idempotency.labels("mismatch").inc()
            raise ProblemError(
                422,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                f"this Idempotency-Key was already used for a different request ({claim.path}); use a new key",
            )
        if isinstance(claim, InFlight):
            self.metrics.idempotency.labels("in_flight").inc()
            raise ProblemError(
                409,
                "request-in-flight",
                "Request in flight",
                "a request with this Idempotency-Key is still being handled; retry shortly",
                headers={"Retry-After": str(claim.retry_after_s)},
            )
        assert isinstance(claim, Claimed)
        self.metrics.idempotency.labels("recovered" if claim.recovered else "claimed").inc()
        keys = {"scope": ctx.scope, "key": ctx.key, "owner": claim.owner}
        command_id = claim.command_id  # the key's id in this window (a new one when an earlier window ran)
        started = _observe(stage, "claim", started)

        try:
            prepared = await prepare(command_id)
        except ProblemError:
            # Nothing was published: free the key, as Stripe does for requests that never ran.
            await self.idempotency.forget(**keys)
            raise
        except BaseException:
            await _quietly(self.idempotency.release(**keys))
            raise
        started = _observe(stage, "check", started)

        try:
            await self.publish(
                prepared.payload,
                command_id=command_id,
                stream_id=prepared.stream_id,
                partition_key=prepared.partition_key,
                actor=ctx.actor,
                correlation_id=ctx.correlation_id,
            )
        except BaseException:
            # The outcome of a failed publish is unknown: keep the key bound to this request and let
            # the client's retry publish the same command id again at once.
            await _quietly(self.idempotency.release(**keys))
            raise
        started = _observe(stage, "publish", started)

        headers = {"Location": f"/v1/commands/{command_id}"}
        body = status_body(command_id, command_type)
        status, media = 202, "application/json"
        if ctx.wait_s is not None:
            headers["Preference-Applied"] = f"wait={ctx.wait_s:g}"
            await _quietly(self.idempotency.mark_accepted(**keys))
            row = await self.waiter.wait(command_id, ctx.wait_s)
            if row is None:
                with contextlib.suppress(Exception):
                    row = await self.reads.command(command_id)  # processing, perhaps
            if row is not None:
                body = status_body(command_id, command_type, row)
                status, body, media = outcome_response(body, ctx.path)
            started = _observe(stage, "wait", started)

        stored = await _quietly(
            self.idempotency.complete(**keys, status=status, body=body, headers=headers)
        )
        _observe(stage, "complete", started)
        if stored is False:
            log.warning("idempotency_key_taken_over", command_id=str(command_id))
        return JSONResponse(body, status_code=status, headers=headers, media_type=media)


def _observe(histogram: Any, stage: str, since: float) -> float:
    now = time.perf_counter()
    histogram.labels(stage).observe(now - since)
    return now


async def _quietly(awaitable: Awaitable[Any]) -> Any:
    """Run bookkeeping whose failure must not change the answer (the command is already decided)."""
    try:
        return await awaitable
    except Exception as exc:  # noqa: BLE001
        log.warning("idempotency_bookkeeping_failed", error=repr(exc)[:300])
        return None


class RecentSyncs:
    """Publishes each sync command once per window in this process; repeats are answered, not sent.

    Concurrent repeats wait for the one publish in flight and share its fate; if it failed, the
    next one tries itself. Bounded (`max_entries`, oldest first), so a flood of distinct ids costs
    memory it can never grow past; an evicted id is merely published again.
    """

    def __init__(self, window_s: float, max_entries: int = 10_000) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._entries: OrderedDict[uuid.UUID, tuple[float, asyncio.Future[bool]]] = OrderedDict()

    async def publish_once(self, command_id: uuid.UUID, publish: Callable[[], Awaitable[None]]) -> bool:
        """Run `publish` unless this command was published (or is being published) lately; True if it ran."""
        while True:
            now = time.monotonic()
            self._expire(now)
            entry = self._entries.get(command_id)
            if entry is None:
                break
            if await asyncio.shield(entry[1]):
                return False
            # that publish failed and removed itself: try again ourselves
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._entries[command_id] = (now + self.window_s, done)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        ok = False
        try:
            await publish()
            ok = True
        finally:
            if not ok and self._entries.get(command_id, (0, None))[1] is done:
                del self._entries[command_id]
            done.set_result(ok)
        return True

    def _expire(self, now: float) -> None:
        while self._entries:
            expires, _ = next(iter(self._entries.values()))
            if expires > now:
                return
            self._entries.popitem(last=False)
