"""Stop and start the broker: committed records and committed consumer offsets survive.

Runs its own throw-away broker (free ports, data dir under tmp) so the shared dev broker that
other tests and developers use is never restarted.
"""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from devstack import kafka as devkafka
from infra.kafka import ensure_topics, make_producer
from infra.settings import Settings
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def private_broker(tmp_path):
    port, controller = _free_ports(2)
    node = devkafka.KafkaNode(port=port, controller_port=controller, home=tmp_path / "kafka")
    devkafka.start(node, timeout=120)
    yield node
    devkafka.stop(node)


async def _consume(settings: Settings, topic: str, group: str, count: int) -> list[bytes]:
    """Read `count` records as `group` and commit exactly those."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_servers, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", isolation_level="read_committed", max_poll_records=count,
    )
    await consumer.start()
    got = []
    try:
        async def enough():
            batch = await consumer.getmany(timeout_ms=300, max_records=count - len(got))
            for recs in batch.values():
                got.extend(recs)
            return len(got) >= count

        await wait_until(enough, timeout=30)
        last = got[-1]
        await consumer.commit({TopicPartition(topic, last.partition): last.offset + 1})
    finally:
        await consumer.stop()
    return [r.value for r in got]


async def test_committed_records_and_offsets_survive_a_broker_restart(private_broker):
    node = private_broker
    settings = Settings(environment="test", kafka_bootstrap_servers=node.bootstrap)
    topic, group = f"restart.{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, {topic: 1})
    producer = await make_producer(settings)
    try:
        for i in range(10):
            await producer.send(topic, f"m{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    assert await _consume(settings, topic, group, 4) == [b"m0", b"m1", b"m2", b"m3"]

    first_pid = devkafka.running_pid(node)
    assert await asyncio.to_thread(devkafka.stop, node)
    assert devkafka.running_pid(node) is None and not devkafka.is_ready(node.bootstrap)
    info = await asyncio.to_thread(devkafka.start, node, timeout=120)
    assert info["started"] and not info["formatted"] and info["pid"] != first_pid

    # the group resumes after its committed offset, and nothing was lost
    assert await _consume(settings, topic, group, 6) == [f"m{i}".encode() for i in range(4, 10)]
    assert await _consume(settings, topic, f"fresh-{group}", 10) == [f"m{i}".encode() for i in range(10)]
