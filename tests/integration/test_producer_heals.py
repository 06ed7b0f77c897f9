"""The idempotent producer recovers from OutOfOrderSequenceNumber instead of failing forever.

A broker restart while batches are in flight can leave aiokafka's sequence numbers ahead of what
the broker stored (the given-up batch spent them); every later batch of that partition is then
refused with OutOfOrderSequenceNumber (aio-libs/aiokafka#1017; seen in the chaos run: the API
answered 503 for good). Here the gap is made exactly that way — sequence numbers spent without a
batch reaching the broker — against the real broker, so the test does not depend on a race.
"""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import OutOfOrderSequenceNumber

from infra.kafka import SelfHealingProducer, make_producer
from infra.settings import Settings


async def test_a_sequence_gap_fails_one_send_then_the_producer_gets_a_new_id(settings: Settings, unique_topic) -> None:
    topic = await unique_topic(partitions=1, prefix="heal")
    producer = await make_producer(settings)
    try:
        assert isinstance(producer, SelfHealingProducer)
        await producer.send_and_wait(topic, b"first", key=b"k")
        old_id = producer._txn_manager.producer_id
        producer._txn_manager.increment_sequence_number(TopicPartition(topic, 0), 5)  # a batch given up

        with pytest.raises(OutOfOrderSequenceNumber):
            await producer.send_and_wait(topic, b"refused", key=b"k")

        meta = await producer.send_and_wait(topic, b"after", key=b"k")
        assert meta.offset == 1  # the refused record was never written
        assert producer._txn_manager.producer_id != old_id
        for i in range(3):
            assert (await producer.send_and_wait(topic, b"more %d" % i, key=b"k")).offset == 2 + i
    finally:
        await producer.stop()
