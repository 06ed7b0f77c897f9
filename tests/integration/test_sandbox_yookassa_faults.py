"""Every fault mode of the YooKassa sandbox, seen through the official SDK and plain httpx.

Each rule is narrowed to the test's own metadata (`test_run`), so nothing else in the session
trips over it. What matters for "never charge twice" is checked after every fault: how many
payments exist for that metadata, and that a retry with the same Idempotence-Key reaches the
same payment.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from yookassa import Payment, Refund
from yookassa.domain.exceptions import (
    InternalServerError,
    ResponseProcessingError,
    TooManyRequestsError,
)

from tests.support.yookassa_params import payment_params, refund_params


@pytest.fixture
def sdk(yookassa_sandbox):
    yookassa_sandbox.configure_sdk()
    return yookassa_sandbox


def key() -> str:
    return str(uuid.uuid4())


def rule(params: dict, mode: str, endpoint: str = "POST /v3/payments", **extra) -> dict:
    return {"endpoint": endpoint, "mode": mode, "metadata": {"test_run": params["metadata"]["test_run"]}, **extra}


def test_latency_delays_the_answer_but_applies(sdk) -> None:
    params = payment_params()
    with sdk.faults_added(rule(params, "latency", latency_ms=400)):
        started = time.monotonic()
        payment = Payment.create(params, key())
        elapsed = time.monotonic() - started
    assert elapsed >= 0.4
    assert payment.status == "pending"
    assert len(sdk.payments(params["metadata"])) == 1


async def test_a_client_timeout_during_latency_leaves_an_unknown_outcome(sdk) -> None:
    """What the SDK would hang on, seen with httpx: the client gives up, the sandbox carries on."""
    from tests.support.wait import wait_until

    params, k = payment_params(), key()
    url, headers = f"{sdk.api_url}/payments", {"Idempotence-Key": k}
    with sdk.faults_added(rule(params, "latency", latency_ms=2500, count=1)):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, json=params, auth=sdk.auth, headers=headers, timeout=0.3)
        assert sdk.payments(params["metadata"]) == []  # not yet: still "in flight" at the provider
        created = await wait_until(lambda: sdk.payments(params["metadata"]), timeout=10)
    retried = httpx.post(url, json=params, auth=sdk.auth, headers=headers, timeout=10)
    assert retried.json()["id"] == created[0]["id"]
    assert len(sdk.payments(params["metadata"])) == 1


def test_500_not_applied_creates_nothing_and_the_retry_creates_one(sdk) -> None:
    params, k = payment_params(), key()
    with sdk.faults_added(rule(params, "error_500_not_applied", count=1)):
        with pytest.raises(InternalServerError) as err:
            Payment.create(params, k)
        assert err.value.content["code"] == "internal_server_error"
        assert sdk.payments(params["metadata"]) == []
        retried = Payment.create(params, k)
    assert [p["id"] for p in sdk.payments(params["metadata"])] == [retried.id]


def test_500_applied_creates_one_and_the_retry_returns_it(sdk) -> None:
    params, k = payment_params(), key()
    with sdk.faults_added(rule(params, "error_500_applied", count=1)):
        with pytest.raises(InternalServerError):
            Payment.create(params, k)
        created = sdk.payments(params["metadata"])
        assert len(created) == 1
        retried = Payment.create(params, k)
    assert retried.id == created[0]["id"]
    assert len(sdk.payments(params["metadata"])) == 1


def test_dropped_response_after_apply(sdk) -> None:
    params, k = payment_params(), key()
    with sdk.faults_added(rule(params, "drop_after_apply", count=1)):
        # The SDK turns a connection error into AttributeError (it reads e.response.status_code).
        with pytest.raises(AttributeError):
            Payment.create(params, k)
    created = sdk.payments(params["metadata"])
    assert len(created) == 1
    assert Payment.create(params, k).id == created[0]["id"]
    assert len(sdk.payments(params["metadata"])) == 1


def test_dropped_response_seen_by_httpx(sdk) -> None:
    params, k = payment_params(), key()
    url, headers = f"{sdk.api_url}/payments", {"Idempotence-Key": k}
    with sdk.faults_added(rule(params, "drop_after_apply", count=1)):
        # What a client with its own timeouts sees: the server closed without answering.
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.post(url, json=params, auth=sdk.auth, headers=headers, timeout=5)
    retried = httpx.post(url, json=params, auth=sdk.auth, headers=headers, timeout=5)
    assert retried.status_code == 200
    assert [p["id"] for p in sdk.payments(params["metadata"])] == [retried.json()["id"]]


def test_dropped_request_before_apply(sdk) -> None:
    params, k = payment_params(), key()
    with sdk.faults_added(rule(params, "drop_before_apply", count=1)):
        with pytest.raises(AttributeError):
            Payment.create(params, k)
        assert sdk.payments(params["metadata"]) == []
        retried = Payment.create(params, k)
    assert [p["id"] for p in sdk.payments(params["metadata"])] == [retried.id]


def test_429_is_not_applied_and_says_when_to_retry(sdk) -> None:
    params, k = payment_params(), key()
    with sdk.faults_added(rule(params, "429", count=2, retry_after_ms=3000)):
        with pytest.raises(TooManyRequestsError) as err:
            Payment.create(params, k)
        assert err.value.content["code"] == "too_many_requests"
        assert err.value.content["retry_after"] == 3000
        response = httpx.post(
            f"{sdk.api_url}/payments", json=params, auth=sdk.auth, headers={"Idempotence-Key": k}, timeout=5
        )
        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"
    assert sdk.payments(params["metadata"]) == []
    Payment.create(params, k)
    assert len(sdk.payments(params["metadata"])) == 1


def test_202_processing_then_the_retry_gets_the_result(sdk) -> None:
    params, k = payment_params(), key()
    with sdk.faults_added(rule(params, "202_processing", count=1, retry_after_ms=500)):
        with pytest.raises(ResponseProcessingError) as err:
            Payment.create(params, k)
        assert err.value.content["type"] == "processing"
        assert err.value.content["retry_after"] == 500
        retried = Payment.create(params, k)
    assert retried.status == "pending"
    assert [p["id"] for p in sdk.payments(params["metadata"])] == [retried.id]


def test_faults_on_reads_and_on_refunds(sdk) -> None:
    params = payment_params("500.00")
    payment = Payment.create(params, key())
    sdk.pay(payment.id)
    with sdk.faults_added(rule(params, "error_500_not_applied", endpoint="GET /v3/payments/*", count=1)):
        with pytest.raises(InternalServerError):
            Payment.find_one(payment.id)
        assert Payment.find_one(payment.id).status == "succeeded"

    k = key()
    with sdk.faults_added(rule(params, "drop_after_apply", endpoint="POST /v3/refunds", count=1)):
        with pytest.raises(AttributeError):
            Refund.create(refund_params(payment.id, "100.00"), k)
    refunds = sdk.refunds(params["metadata"])
    assert len(refunds) == 1 and refunds[0]["status"] == "succeeded"
    assert Refund.create(refund_params(payment.id, "100.00"), k).id == refunds[0]["id"]
    assert len(sdk.refunds(params["metadata"])) == 1


def test_refund_outcome_faults(sdk) -> None:
    params = payment_params("500.00")
    payment = Payment.create(params, key())
    sdk.pay(payment.id)

    with sdk.faults_added(rule(params, "refund_canceled", endpoint="POST /v3/refunds", reason="rejected_by_payee", count=1)):
        canceled = Refund.create(refund_params(payment.id, "100.00"), key())
    assert canceled.status == "canceled"
    assert canceled.cancellation_details.reason == "rejected_by_payee"

    with sdk.faults_added(rule(params, "refund_pending", endpoint="POST /v3/refunds", pending_ms=300, count=1)):
        pending = Refund.create(refund_params(payment.id, "500.00"), key())
    assert pending.status == "pending"
    # The whole amount is held by the pending refund: nothing more can be refunded meanwhile.
    deadline = time.monotonic() + 5
    while Refund.find_one(pending.id).status == "pending":
        assert time.monotonic() < deadline, "refund stayed pending"
        time.sleep(0.05)
    assert Refund.find_one(pending.id).status == "succeeded"
    assert str(Payment.find_one(payment.id).refunded_amount.value) == "500.00"


def test_count_skip_and_probability(sdk) -> None:
    params = payment_params()
    r_count = sdk.add_fault(rule(params, "error_500_not_applied", count=2))
    try:
        outcomes = []
        for _ in range(3):
            try:
                Payment.create(params, key())
                outcomes.append("ok")
            except InternalServerError:
                outcomes.append("500")
        assert outcomes == ["500", "500", "ok"]
        assert r_count not in {r["id"] for r in sdk.faults()}  # spent rules disappear
    finally:
        sdk.remove_fault(r_count)

    with sdk.faults_added(rule(params, "error_500_not_applied", skip=1, count=1)) as ids:
        assert Payment.create(params, key()).status == "pending"
        with pytest.raises(InternalServerError):
            Payment.create(params, key())
        assert ids[0] not in {r["id"] for r in sdk.faults()}

    with sdk.faults_added(rule(params, "error_500_not_applied", probability=0.0)) as ids:
        for _ in range(5):
            Payment.create(params, key())
        active = {r["id"]: r for r in sdk.faults()}
        assert active[ids[0]]["hits"] == 0

    with sdk.faults_added(rule(params, "error_500_not_applied", probability=0.5)) as ids:
        results = []
        for _ in range(40):
            try:
                Payment.create(params, key())
                results.append(True)
            except InternalServerError:
                results.append(False)
        assert 5 < results.count(False) < 35  # 40 coin flips: outside this is ~1e-5 likely
        assert {r["id"]: r for r in sdk.faults()}[ids[0]]["hits"] == results.count(False)


def test_rules_only_hit_matching_metadata(sdk) -> None:
    mine, other = payment_params(), payment_params()
    with sdk.faults_added(rule(mine, "error_500_not_applied")):
        assert Payment.create(other, key()).status == "pending"
        with pytest.raises(InternalServerError):
            Payment.create(mine, key())


def test_fault_admin_api_validates_replaces_and_clears(yookassa_sandbox) -> None:
    client = yookassa_sandbox.client
    bad = client.put("/sandbox/faults", json=[{"endpoint": "POST /v3/payments", "mode": "explode"}])
    assert bad.status_code == 400 and "unknown fault mode" in bad.json()["error"]
    bad = client.post("/sandbox/faults", json={"mode": "latency", "probability": 2})
    assert bad.status_code == 400

    before = yookassa_sandbox.faults()
    try:
        replaced = yookassa_sandbox.set_faults(
            [{"endpoint": "GET /nothing/*", "mode": "latency_ms", "delay_ms": 5}, {"endpoint": "/x", "mode": "429"}]
        )
        assert [r["mode"] for r in replaced] == ["latency", "429"]
        assert replaced[0]["latency_ms"] == 5
        assert replaced[1]["endpoint"] == "* /x"
        yookassa_sandbox.clear_faults()
        assert yookassa_sandbox.faults() == []
    finally:
        yookassa_sandbox.set_faults([{k: v for k, v in r.items() if k != "hits"} for r in before])
