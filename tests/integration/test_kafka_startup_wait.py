"""Services wait for an unreachable broker at start-up instead of exiting at once."""

from __future__ import annotations

import time

import pytest
from aiokafka.errors import KafkaError

from infra.kafka import make_producer, until_broker_answers
from tests.support.processes import free_port


async def test_a_step_is_retried_until_the_broker_answers() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise KafkaError("broker not there yet")
        return "started"

    assert await until_broker_answers(flaky, "test step", wait_s=30) == "started"
    assert calls == 3


async def test_an_unreachable_broker_fails_after_the_wait(settings) -> None:  # type: ignore[no-untyped-def]
    nowhere = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    t0 = time.monotonic()
    with pytest.raises(KafkaError):
        await make_producer(nowhere, startup_wait_s=2)
    assert 1.5 <= time.monotonic() - t0 < 60
