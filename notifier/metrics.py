"""The notifier's Prometheus metrics (issue 17; served by infra.metrics.MetricsServer).

Emails are counted when their outcome is recorded (sent, parked for a retry, dead); what is
still waiting (parked, or sending under a claim) and for how long is read from `notifier.emails`
when scraped; whether Mailgun is reachable is the circuit breaker's state, read when scraped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge

EMAILS = Counter(
    "billing_emails_total",
    "Emails by outcome: sent, parked (Mailgun failed; retried later), dead (given up, in the dead-letter topic)",
    ["outcome"],
)
EMAIL_SENT, EMAIL_PARKED, EMAIL_DEAD = EMAILS.labels("sent"), EMAILS.labels("parked"), EMAILS.labels("dead")
WAITING = Gauge("billing_emails_waiting", "Emails not sent yet: parked for a retry, or being sent", ["status"])
OLDEST_WAITING_AGE = Gauge("billing_emails_oldest_waiting_age_seconds", "Age of the oldest email not sent yet (0 when none)")
MAILGUN_AVAILABLE = Gauge(
    "billing_mailgun_available", "0 while the notifier's circuit breaker is open (Mailgun failed; emails are parked), else 1"
)
WAITING_STATUSES = ("parked", "sending")
for _status in WAITING_STATUSES:
    WAITING.labels(_status)

# Both statuses have partial indexes (emails_parked_due_idx, emails_sending_lease_idx).
_WAITING_SQL = """
    SELECT status, count(*), extract(epoch FROM clock_timestamp() - min(created_at))::float8
    FROM notifier.emails WHERE status IN ('parked', 'sending') GROUP BY status
"""


def waiting_refresher(pool: Any, breaker_open: Callable[[], bool]) -> Callable[[], Any]:
    """Refresh the waiting-email gauges and Mailgun's availability (on scrape)."""

    async def refresh() -> None:
        MAILGUN_AVAILABLE.set(0 if breaker_open() else 1)
        async with pool.acquire() as conn:
            rows = await conn.fetch(_WAITING_SQL, timeout=5)
        seen = {row[0]: row for row in rows}
        for status in WAITING_STATUSES:
            WAITING.labels(status).set(seen[status][1] if status in seen else 0)
        OLDEST_WAITING_AGE.set(max([0.0, *(float(row[2] or 0) for row in rows)]))

    return refresh
