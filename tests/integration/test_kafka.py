"""The real broker through `infra.kafka`: idempotent produce → consumer group, transactions,
the consumer loop's commit/retry/dead-letter discipline and rebalancing."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

from aiokafka import AIOKafkaConsumer

from infra.kafka import ConsumerLoop, correlation_id_of, ensure_topics, make_producer
from tests.support.wait import wait_until


async def _drain(settings, topic: str, *, expected: int, isolation_level: str = "read_committed", timeout: float = 20.0):
    """Read a topic from the beginning (no group) until `expected` records arrived."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation_level,
    )
    await consumer.start()
    records = []
    try:
        async def got_all():
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            return len(records) >= expected

        await wait_until(got_all, timeout=timeout, message=f"{expected} records on {topic}")
    finally:
        await consumer.stop()
    return records


async def _run(loop: ConsumerLoop) -> asyncio.Task:
    task = asyncio.create_task(loop.run())
    await loop.wait_started()
    return task


async def test_idempotent_producer_to_consumer_group_round_trip(settings, unique_topic, unique_group, kafka_admin):
    topic = await unique_topic(partitions=3)
    group = unique_group()
    producer = await make_producer(settings)
    sent = {f"user-{k}": [f"{k}:{i}".encode() for i in range(10)] for k in range(5)}
    try:
        for key, values in sent.items():
            for value in values:
                await producer.send(topic, value=value, key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()

    seen: dict[str, list[bytes]] = defaultdict(list)

    async def handle(record):
        seen[record.key.decode()].append(record.value)

    loop = ConsumerLoop(settings, topics=[topic], group_id=group, handle=handle, name="round-trip")
    task = await _run(loop)
    await wait_until(lambda: sum(map(len, seen.values())) >= 50, timeout=30)
    loop.stop()
    await asyncio.wait_for(task, 15)

    assert dict(seen) == sent  # every key's records exactly once and in the order sent
    offsets = await kafka_admin.list_consumer_group_offsets(group)
    committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
    assert sum(committed.values()) == 50  # the group committed everything it handled


async def test_commit_interval_bounds_offset_commits_and_an_idle_fetch_commits_the_tail(
    settings, unique_topic, unique_group, kafka_admin
):
    """A trickle of records is committed at most once per interval (each commit is a broker write),
    and the last records are committed while the loop runs on, without a stop or a new record."""
    topic = await unique_topic(partitions=1)
    group = unique_group()
    handled: list[bytes] = []
    commits = 0

    class CountingLoop(ConsumerLoop):
        async def commit(self, partitions=None):
            nonlocal commits
            if self._done:
                commits += 1
            await super().commit(partitions)

    async def handle(record):
        handled.append(record.value)

    loop = CountingLoop(settings, topics=[topic], group_id=group, handle=handle, name="interval", commit_interval_s=1.0)
    task = await _run(loop)
    producer = await make_producer(settings)
    try:
        await wait_until(lambda: loop.assignment(), timeout=20, message="partition assigned")
        for i in range(40):  # about one second of records, one fetch each
            await producer.send_and_wait(topic, value=str(i).encode())
            await asyncio.sleep(0.025)
        await wait_until(lambda: len(handled) == 40, timeout=20)

        async def all_committed():
            offsets = await kafka_admin.list_consumer_group_offsets(group)
            return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic) == 40

        await wait_until(all_committed, timeout=10, message="the tail committed while the loop runs")
        assert not task.done()
        assert commits <= 4, f"{commits} commits for 40 records in about 1 s with a 1 s interval"
    finally:
        await producer.stop()
        loop.stop()
        await asyncio.wait_for(task, 15)
    assert handled == [str(i).encode() for i in range(40)]


async def test_transactions_committed_visible_aborted_invisible(settings, unique_topic):
    topic = await unique_topic(partitions=1)
    producer = await make_producer(settings, transactional_id=f"tx-{uuid.uuid4().hex}")
    try:
        async with producer.transaction():
            await producer.send(topic, b"committed-1")
            await producer.send(topic, b"committed-2")
        await producer.begin_transaction()
        await producer.send(topic, b"aborted-1")
        await producer.send(topic, b"aborted-2")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topic, b"committed-3")
    finally:
        await producer.stop()

    committed = await _drain(settings, topic, expected=3)
    assert [r.value for r in committed] == [b"committed-1", b"committed-2", b"committed-3"]

    # the aborted records are really in the log: read_uncommitted sees all five
    everything = await _drain(settings, topic, expected=5, isolation_level="read_uncommitted")
    assert sorted(r.value for r in everything) == sorted(
        [b"committed-1", b"committed-2", b"committed-3", b"aborted-1", b"aborted-2"]
    )


async def test_poison_message_goes_to_dead_letter_topic_and_the_partition_moves_on(settings, unique_topic, unique_group):
    topic = await unique_topic(partitions=1)
    dlq = await unique_topic(partitions=1, prefix="dlq")
    attempts: dict[bytes, int] = defaultdict(int)
    handled: list[bytes] = []
    given_up: list[tuple[bytes, str]] = []

    async def handle(record):
        attempts[record.value] += 1
        if record.value == b"poison":
            raise ValueError("cannot parse")
        handled.append(record.value)

    async def on_give_up(record, exc):
        given_up.append((record.value, repr(exc)))

    producer = await make_producer(settings)
    try:
        for value in (b"before", b"poison", b"after"):
            await producer.send_and_wait(topic, value, key=b"k", headers=[("correlation_id", b"corr-1")])
    finally:
        await producer.stop()

    loop = ConsumerLoop(
        settings, topics=[topic], group_id=unique_group(), handle=handle, name="poison",
        max_attempts=3, retry_backoff_s=0.01, dead_letter_topic=dlq, on_give_up=on_give_up,
    )
    task = await _run(loop)
    await wait_until(lambda: handled == [b"before", b"after"], timeout=30)
    loop.stop()
    await asyncio.wait_for(task, 15)

    assert attempts[b"poison"] == 3
    assert given_up == [(b"poison", "ValueError('cannot parse')")]
    [dead] = await _drain(settings, dlq, expected=1)
    headers = {k: v.decode() for k, v in dead.headers}
    assert dead.value == b"poison" and dead.key == b"k"
    assert headers["dlq_original_topic"] == topic
    assert headers["dlq_original_partition"] == "0"
    assert headers["dlq_original_offset"] == "1"
    assert "cannot parse" in headers["dlq_reason"]
    assert headers["correlation_id"] == "corr-1"  # original headers are kept


async def test_offsets_are_committed_only_after_the_handler_so_a_restart_loses_nothing(settings, unique_topic, unique_group):
    topic = await unique_topic(partitions=1)
    group = unique_group()
    producer = await make_producer(settings)
    try:
        for i in range(10):
            await producer.send(topic, str(i).encode())
        await producer.flush()
    finally:
        await producer.stop()

    first: list[int] = []

    async def handle_until_five(record):
        value = int(record.value)
        if value >= 5:
            loop.stop()
            raise RuntimeError("crash before the effect")  # not handled → must not be committed
        first.append(value)

    loop = ConsumerLoop(settings, topics=[topic], group_id=group, handle=handle_until_five, name="first", retry_backoff_s=5)
    await asyncio.wait_for(loop.run(), 30)
    assert first == [0, 1, 2, 3, 4]

    second: list[int] = []

    async def handle(record):
        second.append(int(record.value))

    loop2 = ConsumerLoop(settings, topics=[topic], group_id=group, handle=handle, name="second")
    task = await _run(loop2)
    await wait_until(lambda: len(second) >= 5, timeout=30)
    loop2.stop()
    await asyncio.wait_for(task, 15)
    assert second == [5, 6, 7, 8, 9]


async def test_rebalance_between_two_members_loses_no_record(settings, unique_topic, unique_group):
    topic = await unique_topic(partitions=4)
    group = unique_group()
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def handler(member):
        async def handle(record):
            seen[member].append(int(record.value))
        return handle

    producer = await make_producer(settings)
    a = ConsumerLoop(settings, topics=[topic], group_id=group, handle=handler("a"), name="a")
    b = ConsumerLoop(settings, topics=[topic], group_id=group, handle=handler("b"), name="b")
    try:
        task_a = await _run(a)
        for i in range(40):
            await producer.send(topic, str(i).encode(), key=str(i).encode())
        await producer.flush()
        await wait_until(lambda: len(seen["a"]) >= 40, timeout=30)
        task_b = await _run(b)
        await wait_until(lambda: a.assignment() and b.assignment(), timeout=30, message="both members assigned")
        for i in range(40, 80):
            await producer.send(topic, str(i).encode(), key=str(i).encode())
        await producer.flush()
        await wait_until(lambda: set(seen["a"]) | set(seen["b"]) >= set(range(80)), timeout=30)
    finally:
        await producer.stop()
        a.stop()
        b.stop()
    await asyncio.wait_for(asyncio.gather(task_a, task_b), 20)
    assert seen["b"], "the second member got partitions and records"
    assert set(seen["a"]) | set(seen["b"]) == set(range(80))


async def test_ensure_topics_is_idempotent(settings, kafka_admin):
    name = f"ensure.{uuid.uuid4().hex[:12]}"
    assert await ensure_topics(settings, {name: 2}) == [name]
    assert await ensure_topics(settings, {name: 2}) == []
    [described] = await kafka_admin.describe_topics([name])
    assert len(described["partitions"]) == 2


def test_correlation_id_from_header_or_envelope():
    from aiokafka.structs import ConsumerRecord

    def record(value, headers=()):
        return ConsumerRecord("t", 0, 0, 0, 0, None, value, None, 0, 0, list(headers))

    assert correlation_id_of(record(b"{}", [("correlation_id", b"h-1")])) == "h-1"
    assert correlation_id_of(record(b'{"metadata": {"correlation_id": "e-1"}}')) == "e-1"
    assert correlation_id_of(record(b"not json")) is None
