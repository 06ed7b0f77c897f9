"""The official `yookassa` SDK against the YooKassa sandbox, unchanged but for `api_url`.

If these pass, the payment processor's gateway can be tested against the sandbox and trusted
against the real API: the SDK builds the same requests and parses the same answers.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
import pytest
from yookassa import Configuration, Payment, Refund
from yookassa.domain.exceptions import BadRequestError, NotFoundError, UnauthorizedError

from sandbox.yookassa import cards
from tests.support.yookassa_params import autopayment_params, payment_params, receipt, refund_params


@pytest.fixture
def sdk(yookassa_sandbox):
    """The SDK configured for the session's sandbox (its configuration is global state)."""
    yookassa_sandbox.configure_sdk()
    return yookassa_sandbox


def key() -> str:
    return str(uuid.uuid4())


def test_create_returns_a_pending_redirect_payment(sdk) -> None:
    params = payment_params("299.00", metadata={"subscription_id": "sub-1"}, save_payment_method=True)
    payment = Payment.create(params, key())

    assert len(payment.id) == 36
    assert payment.status == "pending"
    assert payment.paid is False
    assert payment.test is True
    assert payment.amount.value == Decimal("299.00")
    assert payment.amount.currency == "RUB"
    assert payment.confirmation.type == "redirect"
    assert payment.confirmation.confirmation_url == f"{sdk.url}/checkout/{payment.id}"
    # The SDK adds cms_name to metadata; the sandbox keeps what it was sent.
    assert payment.metadata["subscription_id"] == "sub-1"
    assert payment.metadata["cms_name"] == "yookassa_sdk_python"

    stored = sdk.payment(payment.id)
    assert stored["_sandbox"]["receipt"]["customer"]["email"] == "buyer@example.com"
    assert stored["_sandbox"]["save_payment_method"] is True


def test_find_one_after_paying_shows_the_saved_card(sdk) -> None:
    payment = Payment.create(payment_params("499.00", save_payment_method=True), key())
    sdk.pay(payment.id, cards.SUCCESS)

    found = Payment.find_one(payment.id)
    assert found.id == payment.id
    assert found.status == "succeeded"
    assert found.paid is True
    assert found.refundable is True
    assert found.captured_at is not None
    assert found.income_amount.value < found.amount.value  # the provider's fee
    method = found.payment_method
    assert method.type == "bank_card"
    assert method.saved is True
    assert method.title == "Bank card *4444"
    assert method.card.first6 == "555555"
    assert method.card.last4 == "4444"
    assert method.card.card_type == "MasterCard"
    assert len(method.card.expiry_month) == 2 and len(method.card.expiry_year) == 4
    assert len(method.id) == 36


def test_not_found_and_wrong_credentials(sdk) -> None:
    with pytest.raises(NotFoundError) as not_found:
        Payment.find_one(str(uuid.uuid4()))
    assert not_found.value.content["code"] == "not_found"

    Configuration.configure(sdk.shop_id, "wrong-secret", api_url=sdk.api_url)
    with pytest.raises(UnauthorizedError) as unauthorized:
        Payment.create(payment_params(), key())
    assert unauthorized.value.content["code"] == "invalid_credentials"
    assert unauthorized.value.content["type"] == "error"


def test_list_filters_by_status_and_time_and_pages_with_cursor(sdk) -> None:
    before = Payment.create(payment_params("10.00"), key())
    created = [Payment.create(payment_params("10.00"), key()) for _ in range(3)]
    sdk.pay(created[1].id)
    since = before.created_at  # created_at has milliseconds; gte includes `before` itself

    page1 = Payment.list({"limit": 2, "created_at.gte": since})
    assert page1.type == "list"
    assert len(page1.items) == 2
    assert page1.next_cursor
    page2 = Payment.list({"limit": 2, "created_at.gte": since, "cursor": page1.next_cursor})
    ids = [p.id for p in page1.items] + [p.id for p in page2.items]
    ours = [before.id, *(p.id for p in created)]
    # Newest first, each item once, all of ours (other tests' payments may only come before ours).
    assert len(ids) == len(set(ids))
    assert [i for i in ids if i in ours] == list(reversed(ours))

    succeeded = Payment.list({"status": "succeeded", "created_at.gte": since, "limit": 100})
    assert created[1].id in {p.id for p in succeeded.items}
    assert all(p.status == "succeeded" for p in succeeded.items)

    with pytest.raises(BadRequestError) as bad:
        Payment.list({"limit": 1000})
    assert bad.value.content["parameter"] == "limit"


def test_two_stage_payment_capture_and_cancel(sdk) -> None:
    first = Payment.create(payment_params("300.00", capture=False), key())
    sdk.pay(first.id)
    waiting = Payment.find_one(first.id)
    assert waiting.status == "waiting_for_capture"
    assert waiting.paid is True
    assert waiting.expires_at is not None

    captured = Payment.capture(first.id, {"amount": {"value": "250.00", "currency": "RUB"}}, key())
    assert captured.status == "succeeded"
    assert captured.amount.value == Decimal("250.00")

    second = Payment.create(payment_params("300.00", capture=False), key())
    with pytest.raises(BadRequestError):  # a pending payment cannot be canceled through the API
        Payment.cancel(second.id, key())
    sdk.pay(second.id)
    canceled = Payment.cancel(second.id, key())
    assert canceled.status == "canceled"
    assert canceled.cancellation_details.party == "merchant"
    assert canceled.cancellation_details.reason == "canceled_by_merchant"

    # Capturing with no body (the SDK sends an empty body) works too.
    third = Payment.create(payment_params("100.00", capture=False), key())
    sdk.pay(third.id)
    assert Payment.capture(third.id, None, key()).status == "succeeded"


def test_refunds_partial_full_and_over_the_limit(sdk) -> None:
    payment = Payment.create(payment_params("1000.00"), key())
    with pytest.raises(BadRequestError) as not_paid:
        Refund.create(refund_params(payment.id, "1.00"), key())
    assert not_paid.value.content["parameter"] == "payment_id"
    sdk.pay(payment.id)

    first = Refund.create(refund_params(payment.id, "300.00", description="days not used"), key())
    assert first.status == "succeeded"
    assert first.payment_id == payment.id
    assert len(first.id) == 36
    found = Refund.find_one(first.id)
    assert found.id == first.id and found.amount.value == Decimal("300.00")

    with pytest.raises(BadRequestError) as too_much:
        Refund.create(refund_params(payment.id, "700.01"), key())
    assert too_much.value.content["parameter"] == "amount.value"

    rest = Refund.create(refund_params(payment.id, "700.00"), key())
    assert rest.status == "succeeded"
    after = Payment.find_one(payment.id)
    assert after.refunded_amount.value == Decimal("1000.00")
    assert after.refundable is False

    listed = Refund.list({"payment_id": payment.id})
    assert {r.id for r in listed.items} == {first.id, rest.id}


def test_autopayment_with_a_saved_method_and_on_demand_decline(sdk) -> None:
    first = Payment.create(payment_params("299.00", save_payment_method=True), key())
    method_id = sdk.pay(first.id)["payment_method"]["id"]

    renewal = Payment.create(autopayment_params(method_id, "299.00"), key())
    assert renewal.status == "succeeded"  # no confirmation needed
    assert renewal.confirmation is None
    assert renewal.payment_method.id == method_id and renewal.payment_method.saved is True

    sdk.set_method_behaviour(method_id, "insufficient_funds")
    declined = Payment.create(autopayment_params(method_id, "299.00"), key())
    assert declined.status == "canceled"
    assert declined.cancellation_details.reason == "insufficient_funds"
    assert declined.cancellation_details.party == "payment_network"

    sdk.set_method_behaviour(method_id, None)
    assert Payment.create(autopayment_params(method_id, "299.00"), key()).status == "succeeded"

    with pytest.raises(BadRequestError) as unknown:
        Payment.create(autopayment_params(str(uuid.uuid4())), key())
    assert unknown.value.content["parameter"] == "payment_method_id"


def test_a_saved_card_that_requires_3ds_waits_for_the_customer_on_the_payment_page(sdk) -> None:
    first = Payment.create(payment_params("299.00", save_payment_method=True), key())
    method_id = sdk.pay(first.id)["payment_method"]["id"]
    view = sdk.set_method_behaviour(method_id, require_3ds=True)
    assert view["require_3ds"] is True and view["decline_reason"] is None

    renewal = Payment.create(autopayment_params(method_id, "299.00"), key())
    assert renewal.status == "pending" and renewal.paid is False
    url = renewal.confirmation.confirmation_url
    assert url == f"{sdk.url}/checkout/{renewal.id}"
    assert Payment.find_one(renewal.id).status == "pending"  # nothing happens until the customer confirms
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200 and 'data-status="pending"' in page.text
    confirmed = sdk.pay(renewal.id)
    assert confirmed["status"] == "succeeded" and confirmed["payment_method"]["id"] == method_id
    assert confirmed["authorization_details"]["three_d_secure"]["applied"] is True
    assert sdk.pay(renewal.id)["status"] == "succeeded"  # a second submit changes nothing

    failed = Payment.create(autopayment_params(method_id, "299.00"), key())
    assert sdk.pay(failed.id, cards.DECLINE_3D_SECURE_FAILED)["cancellation_details"]["reason"] == "3d_secure_failed"
    left = Payment.create(autopayment_params(method_id, "299.00"), key())
    assert sdk.leave(left.id, expire_after_s=0)["cancellation_details"]["reason"] == "expired_on_confirmation"

    sdk.set_method_behaviour(method_id, require_3ds=False)
    assert Payment.create(autopayment_params(method_id, "299.00"), key()).status == "succeeded"
    bad = httpx.post(f"{sdk.url}/sandbox/payment-methods/{method_id}/behaviour", json={"require_3ds": "yes"}, timeout=10)
    assert bad.status_code == 400


def test_a_method_not_saved_cannot_be_charged_again(sdk) -> None:
    first = Payment.create(payment_params("299.00", save_payment_method=False), key())
    method = sdk.pay(first.id)["payment_method"]
    assert method["saved"] is False
    with pytest.raises(BadRequestError):
        Payment.create(autopayment_params(method["id"]), key())


def test_receipt_is_required_and_checked(sdk) -> None:
    with pytest.raises(BadRequestError) as missing:
        Payment.create(payment_params("299.00", with_receipt=False), key())
    assert missing.value.content["parameter"] == "receipt"

    wrong_sum = payment_params("299.00")
    wrong_sum["receipt"] = receipt("199.00")
    with pytest.raises(BadRequestError) as mismatch:
        Payment.create(wrong_sum, key())
    assert mismatch.value.content["parameter"] == "receipt.items"

    by_phone = payment_params("299.00")
    by_phone["receipt"]["customer"] = {"phone": "79001234567"}
    assert Payment.create(by_phone, key()).status == "pending"

    # A shop without fiscalisation (config) accepts payments without a receipt.
    with sdk.config_override(require_receipt=False):
        assert Payment.create(payment_params("299.00", with_receipt=False), key()).status == "pending"


def test_idempotence_same_key_replays_and_different_body_is_rejected(sdk) -> None:
    k = key()
    params = payment_params("150.00")
    first = Payment.create(params, k)
    again = Payment.create(params, k)
    assert again.id == first.id
    assert len(sdk.payments(params["metadata"])) == 1

    changed = dict(params, amount={"value": "151.00", "currency": "RUB"})
    changed["receipt"] = receipt("151.00")
    with pytest.raises(BadRequestError) as conflict:
        Payment.create(changed, k)
    assert conflict.value.content["parameter"] == "Idempotence-Key"
    assert len(sdk.payments(params["metadata"])) == 1

    # The same key on another endpoint is another request too.
    sdk.pay(first.id)
    with pytest.raises(BadRequestError):
        Refund.create(refund_params(first.id, "1.00"), k)

    stats = sdk.stats(by="idempotence_key", metadata=params["metadata"])
    assert stats["counts"] == {k: 1}


def test_idempotence_key_is_required_on_post(sdk) -> None:
    body = payment_params()
    response = httpx.post(f"{sdk.api_url}/payments", json=body, auth=sdk.auth, timeout=10)
    assert response.status_code == 400
    assert response.json()["parameter"] == "Idempotence-Key"
    assert response.json()["type"] == "error"
    assert sdk.payments(body["metadata"]) == []


def test_bad_amounts_are_rejected_with_the_parameter(sdk) -> None:
    for value, parameter in (("0.00", "amount.value"), ("1.001", "amount.value"), ("abc", "amount.value")):
        body = payment_params(with_receipt=False)
        body["amount"]["value"] = value
        response = httpx.post(
            f"{sdk.api_url}/payments",
            json=body,
            auth=sdk.auth,
            headers={"Idempotence-Key": key()},
            timeout=10,
        )
        assert response.status_code == 400, value
        assert response.json()["code"] == "invalid_request"
        assert response.json()["parameter"] == parameter
