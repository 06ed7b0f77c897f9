"""The Mailgun sandbox over real HTTP: Mailgun's form encodings, auth, errors, faults, inbox."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest


def address() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


def send(mg, data, files=None, auth=None, domain=None, timeout=10.0) -> httpx.Response:
    """POST a message the way a Mailgun client does (form-encoded, or multipart with files)."""
    return mg.client.post(
        f"/v3/{domain or mg.domain}/messages", auth=auth or mg.auth, data=data, files=files, timeout=timeout
    )


def message(to: str, **extra) -> dict:
    return {
        "from": "Billing <billing@mg.billing.local>",
        "to": to,
        "subject": "Payment received",
        "text": "Thank you: 299,00 ₽",
        "html": "<p>Thank you: <b>299,00 ₽</b></p>",
        **extra,
    }


def test_form_encoded_message_is_accepted_and_shown_with_every_field(mailgun_sandbox) -> None:
    to, cc = address(), address()
    response = send(
        mailgun_sandbox,
        message(
            f"Ann Smith <{to}>",
            cc=cc,
            **{
                "o:tag": ["payment_succeeded", "ru"],
                "v:event_id": "evt-1",
                "v:user_id": "u-1",
                "h:Message-Id": f"evt-1.{to}@mg.billing.local",
                "h:Reply-To": "support@example.com",
                "o:tracking": "yes",
            },
        ),
    )
    assert response.status_code == 200
    body = response.json()
    assert body == {"id": f"<evt-1.{to}@mg.billing.local>", "message": "Queued. Thank you."}
    assert response.request.headers["content-type"] == "application/x-www-form-urlencoded"

    [stored] = mailgun_sandbox.messages(to=to.upper())  # addresses match case-insensitively
    assert stored["id"] == body["id"]
    assert stored["to"] == [to] and stored["cc"] == [cc]
    assert stored["from"] == "Billing <billing@mg.billing.local>"
    assert stored["subject"] == "Payment received"
    assert stored["text"] == "Thank you: 299,00 ₽"
    assert "<b>299,00 ₽</b>" in stored["html"]
    assert stored["tags"] == ["payment_succeeded", "ru"]
    assert stored["variables"] == {"event_id": "evt-1", "user_id": "u-1"}
    assert stored["headers"]["Reply-To"] == "support@example.com"
    assert stored["options"] == {"tracking": "yes"}
    assert mailgun_sandbox.messages(to=cc)[0]["id"] == body["id"]
    assert mailgun_sandbox.messages(to=to, tag="payment_succeeded")[0]["id"] == body["id"]
    assert mailgun_sandbox.messages(to=to, tag="other") == []


def test_multipart_message_with_an_attachment(mailgun_sandbox) -> None:
    to = address()
    response = send(
        mailgun_sandbox,
        message(to, **{"o:tag": "receipt"}),
        files={"attachment": ("receipt.txt", b"54-FZ receipt", "text/plain")},
    )
    assert response.status_code == 200
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    [stored] = mailgun_sandbox.messages(to=to)
    assert stored["attachments"] == [
        {"field": "attachment", "filename": "receipt.txt", "content_type": "text/plain", "size": 13}
    ]
    assert stored["tags"] == ["receipt"]
    assert stored["id"].endswith(f"@{mailgun_sandbox.domain}>")  # generated when not given


def test_every_post_is_stored_even_with_the_same_message_id(mailgun_sandbox) -> None:
    to = address()
    data = message(to, **{"h:Message-Id": f"<{uuid.uuid4()}@mg.billing.local>"})
    first, second = send(mailgun_sandbox, data), send(mailgun_sandbox, data)
    assert first.json()["id"] == second.json()["id"]
    assert len(mailgun_sandbox.messages(to=to)) == 2
    assert mailgun_sandbox.stats(to=to) == {
        "messages": 2,
        "distinct_message_ids": 1,
        "duplicates": {first.json()["id"]: 2},
    }


@pytest.mark.parametrize(
    "auth",
    [None, ("api", "wrong-key"), ("notapi", "key-sandbox")],
    ids=["no-auth", "wrong-key", "wrong-user"],
)
def test_auth_failures_are_401_forbidden_and_store_nothing(mailgun_sandbox, auth) -> None:
    to = address()
    response = httpx.post(
        f"{mailgun_sandbox.api_url}/{mailgun_sandbox.domain}/messages", data=message(to), auth=auth, timeout=10
    )
    assert response.status_code == 401
    assert response.text == "Forbidden"
    assert mailgun_sandbox.messages(to=to) == []


def test_validation_errors_use_mailgun_shapes(mailgun_sandbox) -> None:
    to = address()
    cases = [
        ({k: v for k, v in message(to).items() if k != "from"}, "'from' parameter is missing"),
        ({k: v for k, v in message(to).items() if k != "to"}, "'to' parameter is missing"),
        ({k: v for k, v in message(to).items() if k != "subject"}, "'subject' parameter is missing"),
        (
            {k: v for k, v in message(to).items() if k not in ("text", "html")},
            "Need at least one of 'text', 'html' or 'template' parameters specified",
        ),
        (message("not-an-address"), "to parameter is not a valid address. please check documentation"),
    ]
    for data, expected in cases:
        response = send(mailgun_sandbox, data)
        assert response.status_code == 400, data
        assert response.json() == {"message": expected}
    unknown = send(mailgun_sandbox, message(to), domain="unknown.example")
    assert unknown.status_code == 404
    assert unknown.json() == {"message": "Domain not found: unknown.example"}
    as_json = httpx.post(
        f"{mailgun_sandbox.api_url}/{mailgun_sandbox.domain}/messages",
        json=message(to),
        auth=mailgun_sandbox.auth,
        timeout=10,
    )
    assert as_json.status_code == 400
    assert mailgun_sandbox.messages(to=to) == []


def fault(to: str, mode: str, **extra) -> dict:
    return {"endpoint": "POST /v3/*/messages", "mode": mode, "metadata": {"to": to}, **extra}


def test_500_fault_for_a_count_then_recovery(mailgun_sandbox) -> None:
    to = address()
    with mailgun_sandbox.faults_added(fault(to, "error_500", count=2)):
        codes = [send(mailgun_sandbox, message(to)).status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    assert len(mailgun_sandbox.messages(to=to)) == 1


def test_500_after_storing_makes_the_retry_a_duplicate(mailgun_sandbox) -> None:
    to = address()
    data = message(to, **{"h:Message-Id": f"<{uuid.uuid4()}@mg.billing.local>"})
    with mailgun_sandbox.faults_added(fault(to, "error_500_applied", count=1)):
        assert send(mailgun_sandbox, data).status_code == 500
        assert send(mailgun_sandbox, data).status_code == 200
    stats = mailgun_sandbox.stats(to=to)
    assert stats["messages"] == 2 and stats["distinct_message_ids"] == 1


def test_latency_and_429(mailgun_sandbox) -> None:
    to = address()
    with mailgun_sandbox.faults_added(fault(to, "latency", latency_ms=300, count=1)):
        started = time.monotonic()
        assert send(mailgun_sandbox, message(to)).status_code == 200
        assert time.monotonic() - started >= 0.3
    with mailgun_sandbox.faults_added(fault(to, "429", count=1, retry_after_ms=2000)):
        limited = send(mailgun_sandbox, message(to))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert len(mailgun_sandbox.messages(to=to)) == 1


async def test_timeouts_with_and_without_storing(mailgun_sandbox) -> None:
    from tests.support.wait import wait_until

    to = address()
    with mailgun_sandbox.faults_added(fault(to, "timeout", hold_ms=1500, count=1)):
        with pytest.raises(httpx.ReadTimeout):  # the client gives up first
            send(mailgun_sandbox, message(to, subject="held"), timeout=0.5)
    with mailgun_sandbox.faults_added(fault(to, "timeout", hold_ms=300, count=1)):
        # A patient client sees the end of the hold: a gateway timeout, and nothing stored.
        late = send(mailgun_sandbox, message(to, subject="held"), timeout=10)
    assert late.status_code == 504
    with mailgun_sandbox.faults_added(fault(to, "timeout_applied", hold_ms=1500, count=1)):
        with pytest.raises(httpx.ReadTimeout):
            send(mailgun_sandbox, message(to, subject="stored anyway"), timeout=0.5)
    # "timeout_applied" stored the message before holding the answer back.
    stored = await wait_until(lambda: mailgun_sandbox.messages(to=to), timeout=10)
    assert [m["subject"] for m in stored] == ["stored anyway"]


def test_dropped_connections(mailgun_sandbox) -> None:
    to = address()
    with mailgun_sandbox.faults_added(fault(to, "drop_before_apply", count=1)):
        with pytest.raises(httpx.RemoteProtocolError):
            send(mailgun_sandbox, message(to, subject="lost request"))
    with mailgun_sandbox.faults_added(fault(to, "drop_after_apply", count=1)):
        with pytest.raises(httpx.RemoteProtocolError):
            send(mailgun_sandbox, message(to, subject="lost response"))
    assert [m["subject"] for m in mailgun_sandbox.messages(to=to)] == ["lost response"]


def test_probability_fault(mailgun_sandbox) -> None:
    to = address()
    with mailgun_sandbox.faults_added(fault(to, "error_500", probability=0.5)):
        codes = [send(mailgun_sandbox, message(to)).status_code for _ in range(30)]
    assert 3 < codes.count(500) < 27
    assert len(mailgun_sandbox.messages(to=to)) == codes.count(200)


def test_inbox_pages(mailgun_sandbox) -> None:
    to = address()
    subject = f"Renewal failed {uuid.uuid4().hex[:6]}"
    send(mailgun_sandbox, message(to, subject=subject, html="<p>Card <script>declined</script></p>"))
    inbox = httpx.get(f"{mailgun_sandbox.url}/", params={"to": to}, timeout=10)
    assert inbox.status_code == 200 and subject in inbox.text
    assert httpx.get(f"{mailgun_sandbox.url}/inbox", timeout=10).status_code == 200
    storage_id = mailgun_sandbox.messages(to=to)[0]["storage_id"]
    page = httpx.get(f"{mailgun_sandbox.url}/inbox/{storage_id}", timeout=10)
    assert page.status_code == 200
    assert subject in page.text
    assert "<script>" not in page.text  # the HTML part is escaped into a sandboxed iframe
    assert httpx.get(f"{mailgun_sandbox.url}/inbox/999999999", timeout=10).status_code == 404


async def test_messages_api_async_helpers_and_filters(mailgun_sandbox) -> None:
    to = address()
    for i in range(3):
        send(mailgun_sandbox, message(to, subject=f"n{i}", **{"o:tag": f"t{i}"}))
    items = await mailgun_sandbox.amessages(to=to)
    assert [m["subject"] for m in items] == ["n0", "n1", "n2"]
    newest = await mailgun_sandbox.amessages(to=to, order="desc", limit=1)
    assert [m["subject"] for m in newest] == ["n2"]
    assert [m["subject"] for m in await mailgun_sandbox.amessages(to=to, tag="t1")] == ["n1"]
    after = await mailgun_sandbox.amessages(to=to, after=items[0]["storage_id"])
    assert [m["subject"] for m in after] == ["n1", "n2"]


@pytest.mark.slow
def test_mailgun_state_survives_restart(mailgun_sandbox_factory) -> None:
    mg = mailgun_sandbox_factory(name="mailgun-restart")
    to = address()
    assert send(mg, message(to)).status_code == 200
    mg.process.restart(hard=True)
    assert len(mg.messages(to=to)) == 1
    assert mg.client.post("/sandbox/reset").status_code == 403
