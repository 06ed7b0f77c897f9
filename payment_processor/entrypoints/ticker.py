"""The loop the janitor and the scheduler share: tick, publish due commands, sleep, survive errors.

Both find due work in a table under `FOR UPDATE SKIP LOCKED`, publish one deterministic command per
row (ids derived from the row, so a crash between publish and mark republishes the same command,
which the processor handles once), wait for every acknowledgement, then mark the rows in the same
transaction. Only what they find and how they name their commands differ.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import socket
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.clock import Clock
from infra.logging import get_logger
from schemas import Envelope

log = get_logger(__name__)

_TICKED = text(
    "INSERT INTO processor.ticks (name, ticked_at, ticked_by) VALUES (:name, now(), :by)"
    " ON CONFLICT (name) DO UPDATE SET ticked_at = excluded.ticked_at, ticked_by = excluded.ticked_by"
)


class CommandTicker(abc.ABC):
    """Runs `tick()` until stopped; a full batch ticks again at once, a short one sleeps `tick_s`."""

    name = "ticker"

    def __init__(self, *, engine: AsyncEngine, producer: AIOKafkaProducer, commands_topic: str, clock: Clock,
                 batch: int, tick_s: float) -> None:
        self.engine = engine
        self.producer = producer
        self.commands_topic = commands_topic
        self.clock = clock
        self.batch = batch
        self.tick_s = tick_s
        self.published = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    @abc.abstractmethod
    async def tick(self) -> int:
        """Publish the due commands; returns how many were due."""

    async def run(self) -> None:
        """Tick until stopped; an error in one tick is logged and retried on the next."""
        while not self._stop.is_set():
            try:
                found = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - it must outlive a database or broker hiccup
                log.warning(f"{self.name}_tick_failed", error=repr(exc))
                found = 0
            else:
                await self._heartbeat()
            if found < self.batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.tick_s)
        log.info(f"{self.name}_stopped", published=self.published)

    async def _heartbeat(self) -> None:
        """Record the tick in `processor.ticks` (read by `billing status`); a failure only warns."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(_TICKED, {"name": self.name, "by": f"{socket.gethostname()}:{os.getpid()}"})
        except Exception as exc:  # noqa: BLE001 - the heartbeat must never stop the ticks
            log.warning(f"{self.name}_heartbeat_failed", error=repr(exc))

    async def publish(self, commands: Sequence[tuple[Envelope, str]]) -> None:
        """Send (command, Kafka key) pairs and wait until the broker acknowledged all of them."""
        sends = [
            await self.producer.send(
                self.commands_topic,
                value=command.to_json(),
                key=key.encode(),
                headers=[("correlation_id", command.metadata.correlation_id.encode())],
            )
            for command, key in commands
        ]
        await asyncio.gather(*sends)
        self.published += len(commands)
