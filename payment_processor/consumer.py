"""The entry point on `billing.commands`: consumer loops that feed the command handler.

`ConsumerLoop` (shared library) commits offsets only after the handler returned, retries a
failing record a bounded number of times and then copies it to the dead-letter topic; here
`on_give_up` turns that into a `CommandFailed` terminal event on the command's own stream, so
the command shows how it ended and never blocks its partition forever.

One process runs several loops in the same consumer group: each owns some partitions and
handles them in order, so commands of one account stay ordered while different accounts are
handled concurrently.
"""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from eventstore.kafka import ConsumerLoop
from eventstore.logging import get_logger
from eventstore.settings import Settings
from payment_processor.config import ProcessorSettings
from payment_processor.domain import command_id_of
from payment_processor.handlers import CommandHandler, command_from_record_value, identity_from_raw

log = get_logger(__name__)


def give_up_reason(exc: BaseException, attempts: int) -> str:
    if isinstance(exc, ValueError):  # includes pydantic's ValidationError: retrying will not help
        return f"The command is not valid and cannot be processed: {exc}"[:1000]
    return f"The command could not be processed after {attempts} attempts ({type(exc).__name__}: {exc})."[:1000]


def build_loops(settings: Settings, config: ProcessorSettings, handler: CommandHandler) -> list[ConsumerLoop]:
    async def handle(record: ConsumerRecord) -> None:
        await handler.handle_record_value(record.value)

    async def on_give_up(record: ConsumerRecord, exc: BaseException) -> None:
        reason = give_up_reason(exc, config.max_attempts)
        command = command_from_record_value(record.value)
        if command is not None:
            await handler.fail(
                command_id_of(command),
                command.type,
                command.stream_id,
                reason,
                correlation_id=command.metadata.correlation_id,
                actor=command.metadata.actor,
            )
            return
        identity = identity_from_raw(record.value)
        if identity is None:
            log.error("unreadable_command_dead_lettered", topic=record.topic, partition=record.partition, offset=record.offset)
            return
        command_id, command_type, stream_id = identity
        await handler.fail(command_id, command_type, stream_id, reason)

    return [
        ConsumerLoop(
            settings,
            topics=[settings.commands_topic],
            group_id=config.group_id,
            handle=handle,
            name=f"payment-processor-{i}",
            max_attempts=config.max_attempts,
            dead_letter_topic=settings.commands_dlq_topic,
            on_give_up=on_give_up,
            batch_max=200,
            consumer_options={
                "session_timeout_ms": config.session_timeout_ms,
                "heartbeat_interval_ms": min(2000, config.session_timeout_ms // 4),
            },
        )
        for i in range(config.consumers)
    ]
