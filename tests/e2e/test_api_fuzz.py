"""Property-based fuzzing of the whole command API from its own OpenAPI document (schemathesis).

The API runs as a real process (`python -m command_api`) on real Kafka and PostgreSQL, with a
unique commands topic. Every operation gets generated requests — valid and invalid bodies,
parameters and headers — sent with a valid operator token (so user and operator endpoints are
both reachable); the checks require zero 5xx, documented status codes, documented content types
and bodies that match the documented schemas. Bounded so it runs in well under a minute.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis.errors import Unsatisfiable
from hypothesis import settings as hypothesis_settings

from command_api.config import YOOKASSA_NETWORKS, ApiSettings
from infra.tokens import mint_token
from tests.fixtures.command_api import LOCAL_TRUST
from tests.support.processes import ManagedProcess, free_port

pytestmark = pytest.mark.slow

FUZZ_USER = f"fuzz-{uuid.uuid4().hex[:8]}"
MAX_EXAMPLES = {"positive": 10, "negative": 6}


@pytest.fixture(scope="module")
async def fuzz_api(settings, engine, seed, unique_topic_module) -> Iterator[dict[str, str]]:  # type: ignore[misc]
    """The API as a real process, with some read-model rows of the fuzzing user to return."""
    plan = await seed.plan()
    sub = await seed.subscription(FUZZ_USER, plan)
    payment = await seed.payment(sub)
    await seed.refund(payment, 100)
    port = free_port()
    env = {
        "DATABASE_URL": settings.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "COMMANDS_TOPIC": unique_topic_module,
        "JWT_SECRET": ApiSettings().jwt_secret,
        "YOOKASSA_TRUSTED_NETWORKS": YOOKASSA_NETWORKS + "," + LOCAL_TRUST,
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "API_MAX_WAIT_S": "0.2",  # `Prefer: wait=N` is fuzzed too; nobody processes this topic
        "LOG_LEVEL": "WARNING",
    }
    process = ManagedProcess("api-fuzz", "command_api", env=env, ready_url=f"http://127.0.0.1:{port}/readyz")
    await process.astart(timeout=60)
    try:
        yield {"base_url": f"http://127.0.0.1:{port}", "plan_id": plan["plan_id"]}
    finally:
        process.terminate()
    assert process.returncode in (0, -15), process.tail()  # uvicorn re-raises SIGTERM after a clean shutdown


@pytest.fixture(scope="module")
async def unique_topic_module(settings, kafka_admin) -> str:  # type: ignore[no-untyped-def]
    from infra.kafka import ensure_topics

    name = f"test.api.fuzz.{uuid.uuid4().hex[:10]}"
    await ensure_topics(settings, {name: 3}, admin=kafka_admin)
    return name


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_the_api_never_fails_and_always_matches_its_schema(fuzz_api, settings, mode):
    """Every operation, `MAX_EXAMPLES[mode]` generated requests each: no 5xx, responses as documented.

    schemathesis' pytest plugin (`from_fixture`/`parametrize`) does not run on pytest 9, so the
    test drives its strategies with Hypothesis directly: one `@given` run per operation, failures
    collected so one report names every operation that broke.
    """
    from schemathesis.generation.modes import GenerationMode
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    # Excluded: a schema-valid request may still be refused for what it means (an unknown plan,
    # a reused Idempotency-Key) with a documented 422 — that is correct behaviour, not a bug.

    token = mint_token(ApiSettings().jwt_secret, user_id=FUZZ_USER, email="fuzz@example.com", locale="en", role="operator")
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(f"{fuzz_api['base_url']}/openapi.json")
    # The token is sent on every request (below) rather than generated: negating it would only
    # re-test what test_api_auth covers, and be undone by the header we add. Unknown query
    # parameters are ignored by design (HTTP caches and proxies add them), so none are invented.
    schema.config.generation.update(with_security_parameters=False, allow_extra_parameters=False)
    failures: dict[str, str] = {}
    timings: dict[str, float] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @hypothesis_settings(
            max_examples=MAX_EXAMPLES[mode], deadline=None, database=None, suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
        def check(case) -> None:  # type: ignore[no-untyped-def]
            case.call_and_validate(
                base_url=fuzz_api["base_url"], headers=headers, timeout=15, excluded_checks=[positive_data_acceptance]
            )

        started = time.monotonic()
        try:
            check()
        except Unsatisfiable:
            assert mode == "negative"  # nothing to get wrong in an operation without parameters
        except Exception as exc:  # noqa: BLE001 - collect and report every failing operation
            failures[operation.label] = str(exc)[:3000]
        timings[operation.label] = round(time.monotonic() - started, 1)
    print(f"fuzzing ({mode}) seconds per operation:", timings)
    assert operations == 33
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
