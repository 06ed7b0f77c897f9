"""Topics a service needs, created when missing (partitions as configured) and waited for until they have leaders."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from infra.logging import get_logger
from infra.settings import Settings
from infra.kafka.producer import until_broker_answers

log = get_logger(__name__)


# Kafka error codes we expect from CreateTopics
_TOPIC_ALREADY_EXISTS = 36

_NO_ERROR = 0

async def ensure_topics(
    settings: Settings,
    topics: Mapping[str, int],
    *,
    replication_factor: int | None = None,
    admin: AIOKafkaAdminClient | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create the missing topics `{name: partitions}` and wait until each has a leader. Idempotent.

    Returns the names it created. An existing topic is left as it is (never re-partitioned: that
    would move keys to other partitions and break per-key order). Without `replication_factor`, topics
    get min(3, number of brokers) replicas: 1 on the local single-node broker.
    """
    if admin is None:
        async def with_own_admin() -> list[str]:
            own = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers, request_timeout_ms=int(timeout * 1000))
            try:
                await own.start()
                return await ensure_topics(settings, topics, replication_factor=replication_factor, admin=own, timeout=timeout)
            finally:
                await own.close()

        return await until_broker_answers(with_own_admin, "ensure topics")
    existing = set(await admin.list_topics())
    missing = {name: partitions for name, partitions in topics.items() if name not in existing}
    if missing and replication_factor is None:
        cluster = await admin.describe_cluster()
        replication_factor = max(1, min(3, len(cluster["brokers"])))
    wanted = [NewTopic(name, partitions, replication_factor) for name, partitions in missing.items()]
    created: list[str] = []
    if wanted:
        response = await admin.create_topics(wanted, timeout_ms=int(timeout * 1000))
        for error in response.topic_errors:
            name, code = error[0], error[1]
            if code == _NO_ERROR:
                created.append(name)
            elif code != _TOPIC_ALREADY_EXISTS:
                message = error[2] if len(error) > 2 else ""
                raise KafkaError(f"cannot create topic {name!r}: error {code} {message}")
    await _wait_for_leaders(admin, list(topics), timeout)
    return created

async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        described = await admin.describe_topics(names)
        ready = all(
            t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise KafkaError(f"topics {names} have no leader after {timeout}s: {described}")
        await asyncio.sleep(0.1)
