"""`KeyedConsumerLoop` over the real broker: accounts run concurrently, one account stays in order,
and no offset is committed past a record that is not finished."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.kafka import make_producer
from payment_processor.entrypoints.consumer import KeyedConsumerLoop
from tests.support.wait import wait_until


async def _produce(settings, topic: str, records: list[tuple[str, str]]) -> None:
    producer = await make_producer(settings)
    try:
        for key, value in records:
            await producer.send(topic, value=value.encode(), key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _committed(kafka_admin, group: str, topic: str) -> dict[int, int]:
    offsets = await kafka_admin.list_consumer_group_offsets(group)
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def _start(loop: KeyedConsumerLoop) -> asyncio.Task:
    task = asyncio.create_task(loop.run())
    await loop.wait_started()
    return task


async def test_keys_run_concurrently_and_each_key_in_order(settings, unique_topic, unique_group) -> None:
    topic = await unique_topic(partitions=2)
    sent = [(f"user-{k}", f"{k}:{i}") for i in range(6) for k in range(12)]
    await _produce(settings, topic, sent)
    seen: dict[str, list[str]] = defaultdict(list)
    running: dict[str, int] = defaultdict(int)
    now = peak = 0
    overlaps_within_a_key = 0

    async def handle(record) -> None:
        nonlocal now, peak, overlaps_within_a_key
        key = record.key.decode()
        running[key] += 1
        overlaps_within_a_key += running[key] > 1
        now += 1
        peak = max(peak, now)
        await asyncio.sleep(0.02)
        seen[key].append(record.value.decode())
        now -= 1
        running[key] -= 1

    loop = KeyedConsumerLoop(settings, concurrency=8, topics=[topic], group_id=unique_group(), handle=handle, name="keyed")
    task = await _start(loop)
    await wait_until(lambda: sum(map(len, seen.values())) >= len(sent), timeout=30)
    loop.stop()
    await asyncio.wait_for(task, 15)
    expected: dict[str, list[str]] = defaultdict(list)
    for key, value in sent:
        expected[key].append(value)
    assert dict(seen) == dict(expected)  # every record once, every key in the order sent
    assert overlaps_within_a_key == 0
    assert 2 < peak <= 8  # different keys at once, never more than the concurrency


async def test_the_commit_waits_for_the_first_unfinished_record_of_its_partition(
    settings, unique_topic, unique_group, kafka_admin
) -> None:
    topic = await unique_topic(partitions=1)
    group = unique_group()
    await _produce(settings, topic, [("slow", "0")] + [(f"fast-{i}", str(i + 1)) for i in range(9)])
    release = asyncio.Event()
    finished: list[int] = []

    async def handle(record) -> None:
        if record.key == b"slow":
            await release.wait()
        finished.append(record.offset)

    loop = KeyedConsumerLoop(settings, concurrency=4, topics=[topic], group_id=group, handle=handle, name="watermark",
                             commit_interval_s=0.05)
    task = await _start(loop)
    await wait_until(lambda: len(finished) >= 9, timeout=30)  # everything after offset 0 is done
    await asyncio.sleep(0.5)  # several commit intervals pass
    assert (await _committed(kafka_admin, group, topic)).get(0, 0) in (0, -1)  # nothing past the slow one
    release.set()
    await wait_until(lambda: len(finished) == 10, timeout=10)

    async def all_committed() -> bool:
        return (await _committed(kafka_admin, group, topic)).get(0) == 10

    await wait_until(all_committed, timeout=10)
    loop.stop()
    await asyncio.wait_for(task, 15)


async def test_stop_finishes_records_in_hand_and_leaves_the_rest_to_the_next_member(
    settings, unique_topic, unique_group, kafka_admin
) -> None:
    topic = await unique_topic(partitions=1)
    group = unique_group()
    sent = [("a", f"a{i}") for i in range(5)] + [("b", f"b{i}") for i in range(5)]
    await _produce(settings, topic, sent)
    entered = asyncio.Event()
    release = asyncio.Event()
    first_run: list[str] = []

    async def slow_first(record) -> None:
        if record.value == b"a1":
            entered.set()
            await release.wait()
        first_run.append(record.value.decode())

    loop = KeyedConsumerLoop(settings, concurrency=1, topics=[topic], group_id=group, handle=slow_first, name="stopping")
    task = await _start(loop)
    await asyncio.wait_for(entered.wait(), 30)
    loop.stop()
    await asyncio.sleep(0.2)
    assert not task.done()  # a1 is in hand: stop waits for it
    release.set()
    await asyncio.wait_for(task, 15)
    assert "a1" in first_run and first_run.index("a1") == len(first_run) - 1  # nothing new started after stop
    committed = (await _committed(kafka_admin, group, topic))[0]
    assert committed <= sent.index(("a", "a2"))  # never past a record that did not run

    second_run: list[str] = []

    async def record_all(record) -> None:
        second_run.append(record.value.decode())

    loop2 = KeyedConsumerLoop(settings, concurrency=4, topics=[topic], group_id=group, handle=record_all, name="next")
    task2 = await _start(loop2)
    await wait_until(lambda: set(first_run) | set(second_run) == {v for _, v in sent}, timeout=30)
    loop2.stop()
    await asyncio.wait_for(task2, 15)
    assert [v for v in second_run if v.startswith("a")] == sorted(v for v in second_run if v.startswith("a"))


async def test_a_record_that_keeps_failing_is_dead_lettered_and_its_key_moves_on(settings, unique_topic, unique_group) -> None:
    topic = await unique_topic(partitions=1)
    dlq = await unique_topic(partitions=1, prefix="dlq")
    await _produce(settings, topic, [("acct", "poison"), ("acct", "after"), ("other", "x")])
    handled: list[str] = []
    given_up: list[str] = []

    async def handle(record) -> None:
        if record.value == b"poison":
            raise RuntimeError("cannot")
        handled.append(record.value.decode())

    async def on_give_up(record, exc) -> None:
        given_up.append(record.value.decode())

    loop = KeyedConsumerLoop(settings, concurrency=4, topics=[topic], group_id=unique_group(), handle=handle, name="poison",
                             max_attempts=2, retry_backoff_s=0.01, dead_letter_topic=dlq, on_give_up=on_give_up)
    task = await _start(loop)
    await wait_until(lambda: len(handled) == 2, timeout=30)
    loop.stop()
    await asyncio.wait_for(task, 15)
    assert given_up == ["poison"] and sorted(handled) == ["after", "x"]
    assert loop.dead_lettered == 1
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_servers, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(dlq, 0)])
        batch = await consumer.getmany(timeout_ms=5000)
        assert [r.value for records in batch.values() for r in records] == [b"poison"]
    finally:
        await consumer.stop()


async def test_a_member_joining_mid_stream_takes_over_without_losing_or_repeating(settings, unique_topic, unique_group) -> None:
    """While records are in flight (slow handlers), a second member joins: the first finishes what
    it holds and commits before giving partitions away, so every record runs exactly once and
    each key's records run in order across both members."""
    topic = await unique_topic(partitions=4)
    group = unique_group()
    sent = [(f"acct-{k}", f"{k}:{i}") for i in range(15) for k in range(16)]
    handled: list[tuple[str, str, str]] = []

    def handler(member: str):
        async def handle(record) -> None:
            await asyncio.sleep(0.05)
            handled.append((member, record.key.decode(), record.value.decode()))
        return handle

    a = KeyedConsumerLoop(settings, concurrency=4, topics=[topic], group_id=group, handle=handler("a"), name="a")
    b = KeyedConsumerLoop(settings, concurrency=4, topics=[topic], group_id=group, handle=handler("b"), name="b")
    task_a = await _start(a)
    await _produce(settings, topic, sent)
    await wait_until(lambda: len(handled) >= 20, timeout=30)
    task_b = await _start(b)
    try:
        await wait_until(lambda: len(handled) >= len(sent), timeout=60)
        await asyncio.sleep(0.5)  # anything handled twice would show up now
    finally:
        a.stop()
        b.stop()
    await asyncio.wait_for(asyncio.gather(task_a, task_b), 30)
    values = [v for _, _, v in handled]
    assert sorted(values) == sorted(v for _, v in sent) and len(values) == len(set(values))  # exactly once
    by_key: dict[str, list[str]] = defaultdict(list)
    for _, key, value in handled:
        by_key[key].append(value)
    for key, values_of_key in by_key.items():
        assert values_of_key == [v for k, v in sent if k == key]  # in order, across the hand-over
    assert {m for m, _, _ in handled} == {"a", "b"}  # the hand-over happened mid-stream


class _HeldDispatch:
    """Holds the first non-empty fetched batch between its drain and its dispatch, as a busy event
    loop can: a rebalance may begin in that gap. Mixed into the loop under test."""

    armed = False
    revocations = 0

    def arm(self) -> None:
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.armed = True

    async def on_partitions_revoked(self, partitions):
        self.revocations += 1
        await super().on_partitions_revoked(partitions)

    async def fetch_batch(self, consumer):
        batch = await super().fetch_batch(consumer)
        if batch and self.armed:
            self.armed = False
            self.held.set()
            await self.release.wait()
        return batch


class _HeldKeyed(_HeldDispatch, KeyedConsumerLoop):
    pass


async def test_a_batch_fetched_before_a_rebalance_is_not_handled_after_it(settings, unique_topic, unique_group) -> None:
    """The payment processor's member holds v0 in hand and has drained v1..v9, not yet dispatched,
    when a second member joins. While the revocation waits for v0, the drained batch is dispatched;
    then the partition is assigned back from the committed offset (after v0). That batch is stale:
    handled, it opened a second bookkeeping of the partition beside the next assignment's, every
    record ran twice, and commits could pass records never handled (a chaos run lost an operator's
    command that way). Every record runs exactly once, in order."""
    topic = await unique_topic(partitions=1)
    group = unique_group()
    sent = [("acct-1", f"v{i}") for i in range(10)]
    handled: list[str] = []
    v0_started, v0_may_end = asyncio.Event(), asyncio.Event()

    def handler(name: str):
        async def handle(record) -> None:
            value = record.value.decode()
            if value == "v0" and name == "a" and not v0_started.is_set():
                v0_started.set()
                await v0_may_end.wait()
            handled.append(value)
        return handle

    options = {"topics": [topic], "group_id": group}
    a = _HeldKeyed(settings, concurrency=4, handle=handler("a"), name="a", **options)
    task_a = await _start(a)
    await wait_until(lambda: bool(a.assignment()), timeout=30)
    await _produce(settings, topic, sent[:1])
    await asyncio.wait_for(v0_started.wait(), 30)  # v0 in hand
    a.arm()
    revoked_before = a.revocations
    await _produce(settings, topic, sent[1:])
    await asyncio.wait_for(a.held.wait(), 30)  # v1..v9 drained, not dispatched
    # "a-…" sorts before "b-…": the round-robin assignor gives the partition back to a
    b = KeyedConsumerLoop(settings, concurrency=4, handle=handler("b"), name="b", **options)
    task_b = await _start(b)
    try:
        await wait_until(lambda: a.revocations > revoked_before, timeout=30)  # the revocation waits for v0
        a.release.set()  # the drained batch reaches the dispatch now
        await asyncio.sleep(0.5)
        v0_may_end.set()
        await wait_until(lambda: len(handled) >= len(sent), timeout=30)
        await asyncio.sleep(2.0)  # a second run of any record would show up now
    finally:
        a.stop()
        b.stop()
    await asyncio.wait_for(asyncio.gather(task_a, task_b), 30)
    assert handled == [v for _, v in sent]  # exactly once, in order
