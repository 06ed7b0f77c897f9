"""The notifier's dead-letter topic: events it will never email, with the reason, for an operator.

Same header names as `infra.kafka.ConsumerLoop` uses (`dlq_reason`, `dlq_original_topic`,
...), so one tool reads every dead letter. The value is the original record's bytes untouched.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from infra.logging import get_logger
from infra.metrics import count_dead_letter

log = get_logger(__name__)


class DeadLetters:
    def __init__(self, producer: AIOKafkaProducer, topic: str, group_id: str) -> None:
        self.producer = producer
        self.topic = topic
        self.group_id = group_id
        self.sent = 0

    async def send(
        self,
        value: bytes | None,
        key: bytes | None,
        *,
        reason: str,
        kind: str,
        source: str | None = None,
        event_id: str | None = None,
    ) -> None:
        """Write and wait for the broker's ack (acks=all): only then may the caller move on."""
        headers = [
            ("dlq_reason", reason[:2000].encode()),
            ("dlq_kind", kind.encode()),
            ("dlq_consumer_group", self.group_id.encode()),
            ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
        ]
        if source:  # "topic/partition/offset" (Kafka topic names cannot contain "/")
            parts = source.rsplit("/", 2)
            if len(parts) == 3:
                headers += [
                    ("dlq_original_topic", parts[0].encode()),
                    ("dlq_original_partition", parts[1].encode()),
                    ("dlq_original_offset", parts[2].encode()),
                ]
        if event_id:
            headers.append(("event_id", event_id.encode()))
        await self.producer.send_and_wait(self.topic, value=value or b"", key=key, headers=headers)
        self.sent += 1
        count_dead_letter(self.group_id, source.rsplit("/", 2)[0] if source and source.count("/") >= 2 else "unknown", kind)
        log.error("dead_lettered", topic=self.topic, kind=kind, reason=reason[:500], event_id=event_id, source=source)
