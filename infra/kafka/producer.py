"""The idempotent producer every service publishes with, and waiting for a broker that is still starting.

acks=all with idempotence: a retried send never duplicates a record inside Kafka; a producer whose
sequence numbers broke (OutOfOrderSequenceNumber after a broker restart) heals itself instead of
failing every later send.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber

from infra.logging import get_logger
from infra.settings import Settings

log = get_logger(__name__)


class SelfHealingProducer(AIOKafkaProducer):
    """aiokafka's idempotent producer, minus its one unrecoverable state.

    When a batch is given up (request timeout while the broker restarts), aiokafka has already
    spent its sequence numbers; the broker then answers every later batch of that partition with
    OutOfOrderSequenceNumber, and aiokafka never recovers (aio-libs/aiokafka#1017): the API
    answered 503 and the janitor published nothing until the process was restarted. The Java
    client bumps the producer epoch in that case; here the failed send still raises to its caller
    (who retries, as after any Kafka error), and the producer drops its producer id and sequence
    numbers, so the sender fetches a fresh id (InitProducerId) before the next batch. Duplicates
    a retry may then create carry the same ids and are absorbed by the idempotent consumers.
    """

    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future:  # type: ignore[override]
        future = await super().send(*args, **kwargs)
        future.add_done_callback(self._after_delivery)
        return future

    async def send_batch(self, *args: Any, **kwargs: Any) -> asyncio.Future:  # type: ignore[override]
        future = await super().send_batch(*args, **kwargs)
        future.add_done_callback(self._after_delivery)
        return future

    def _after_delivery(self, future: asyncio.Future) -> None:
        if not future.cancelled() and isinstance(future.exception(), OutOfOrderSequenceNumber):
            self.reset_producer_id()

    def reset_producer_id(self) -> bool:
        """Forget the producer id and sequences (aiokafka internals, pinned version); False if none yet."""
        from aiokafka.producer.transaction_manager import NO_PRODUCER_EPOCH, NO_PRODUCER_ID, PidAndEpoch

        manager = self._txn_manager
        if manager is None or manager.transactional_id is not None or not manager.has_pid():
            return False
        log.warning("kafka_producer_reset", producer_id=manager.producer_id, reason="OutOfOrderSequenceNumber")
        manager._pid_and_epoch = PidAndEpoch(NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
        manager._pid_waiter = asyncio.get_running_loop().create_future()
        manager._sequence_numbers.clear()
        return True

BROKER_WAIT_S = float(os.environ.get("KAFKA_STARTUP_WAIT_S", "120"))

async def make_producer(settings: Settings, *, startup_wait_s: float | None = None, **overrides: Any) -> AIOKafkaProducer:
    """A started producer with idempotence and acks=all: a retried send never duplicates a record.

    `overrides` go to `AIOKafkaProducer` (e.g. `transactional_id=...`, `value_serializer=...`).
    The caller stops it (`await producer.stop()`).
    """
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_servers,
        "client_id": f"billing-{settings.environment}",
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 64 * 1024,
        "request_timeout_ms": 15000,
        "retry_backoff_ms": 100,
        "metadata_max_age_ms": 60000,
    }
    options.update(overrides)

    async def start() -> AIOKafkaProducer:
        producer = SelfHealingProducer(**options)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    return await until_broker_answers(start, "start a producer", startup_wait_s)

async def until_broker_answers(attempt: Callable[[], Awaitable[Any]], what: str, wait_s: float | None = None) -> Any:
    """Retry a start-up step while the broker is unreachable, with back-off, for up to `wait_s`.

    A service that starts while Kafka is restarting (or before it, under `make run`) waits for it
    instead of exiting: one exiting process would stop the whole honcho stack, and a supervisor
    restart loop only adds noise.
    """
    deadline = time.monotonic() + (BROKER_WAIT_S if wait_s is None else wait_s)
    delay = 0.5
    while True:
        try:
            return await attempt()
        except KafkaError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("kafka_unreachable_retrying", step=what, error=repr(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
