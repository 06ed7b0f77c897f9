"""Pure parts of the notifier's sending: Mailgun's form fields, the Message-Id, the breaker."""

from __future__ import annotations

import uuid

from notifier.adapters.mailgun import OutgoingEmail, message_id_for
from notifier.service import MailgunHealth


def test_form_carries_message_id_tag_and_variables() -> None:
    event_id = uuid.UUID("0b6f5a8e-2f7c-4a53-9f7e-5b4a1f3f0c11")
    email = OutgoingEmail(
        to="anna@example.com", subject="S", text="T", html="<p>H</p>",
        message_id=message_id_for(event_id, "mg.billing.local"), tag="refund_succeeded",
        variables={"event_id": str(event_id), "user_id": "u-1"},
    )
    assert email.form("Billing <billing@mg.billing.local>") == {
        "from": "Billing <billing@mg.billing.local>",
        "to": "anna@example.com",
        "subject": "S",
        "text": "T",
        "html": "<p>H</p>",
        "h:Message-Id": "<0b6f5a8e-2f7c-4a53-9f7e-5b4a1f3f0c11@mg.billing.local>",
        "o:tag": "refund_succeeded",
        "v:event_id": str(event_id),
        "v:user_id": "u-1",
    }
    assert OutgoingEmail.from_dict(email.to_dict()) == email  # what the table stores is what is re-sent


def test_breaker_opens_on_failure_pauses_probes_and_closes_on_success() -> None:
    health = MailgunHealth(initial_s=10.0, max_s=40.0)
    assert not health.open and health.wait_before_probe_s() == 0
    health.failed()
    assert health.open and 5.0 <= health.wait_before_probe_s() <= 10.0
    for _ in range(5):
        health.failed()
    assert health.wait_before_probe_s() <= 40.0  # capped
    assert health.succeeded() is True  # this success ended an outage
    assert not health.open and health.wait_before_probe_s() == 0
    assert health.succeeded() is False
