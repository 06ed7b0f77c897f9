"""The processor's Prometheus metrics (issue 17; served by infra.metrics.MetricsServer).

Counted where the fact becomes true: a command's outcome after its terminal event committed, a
YooKassa call when its answer is classified, renewal events after their append, scheduler and
janitor commands after the broker acknowledged them. Hot-path increments go through children
bound once per label set (`_bound`), so a command costs a dict lookup and an `inc()`.
Open operations are read from `processor.open_operations` when scraped (`open_operations_refresher`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from infra.clock import Clock

COMMANDS = Counter(
    "billing_commands_total",
    "Commands the processor ended, by command type and outcome (succeeded, rejected, failed)",
    ["type", "outcome"],
)
PROVIDER_CALLS = Counter(
    "billing_provider_calls_total",
    "YooKassa calls by operation and outcome: the payment's/refund's status, unknown (ask again later) or refused",
    ["operation", "outcome"],
)
PROVIDER_LATENCY = Histogram(
    "billing_provider_call_duration_seconds",
    "Time YooKassa took to answer one call (or to time out), by operation",
    ["operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RENEWALS = Counter(
    "billing_renewals_total",
    "Renewal charges: started (RenewalStarted), succeeded (SubscriptionRenewed), failed (RenewalFailed)",
    ["outcome"],
)
SCHEDULED = Counter(
    "billing_scheduler_commands_total",
    "Due subscriptions the scheduler published a command for, by action (renew, retry, expire, remind, price_notice)",
    ["action"],
)
SCHEDULER_DUE = Gauge(
    "billing_scheduler_due",
    "Due rows the scheduler's last tick found, by action (a full batch means it is behind)",
    ["action"],
)
JANITOR_SYNCS = Counter(
    "billing_janitor_syncs_total",
    "Sync commands the janitor published for operations whose answer is still missing, by kind",
    ["kind"],
)
OPEN_OPERATIONS = Gauge(
    "billing_open_operations",
    "Payments and refunds whose final YooKassa answer we do not have yet (pending or unknown)",
    ["kind"],
)
OPEN_OPERATION_OLDEST_AGE = Gauge(
    "billing_open_operation_oldest_age_seconds",
    "Business-clock age of the oldest open operation of each kind (0 when none)",
    ["kind"],
)

OPERATIONS = ("create_payment", "find_payment", "create_refund", "find_refund", "list")
KINDS = ("payment", "refund")
ACTIONS = ("renew", "retry", "expire", "remind", "price_notice")
# Event type → the renewal outcome it counts as.
RENEWAL_EVENTS = {"RenewalStarted": "started", "SubscriptionRenewed": "succeeded", "RenewalFailed": "failed"}

LATENCY_BY_OPERATION = {operation: PROVIDER_LATENCY.labels(operation) for operation in OPERATIONS}
RENEWAL_CHILDREN = {event_type: RENEWALS.labels(outcome) for event_type, outcome in RENEWAL_EVENTS.items()}
for _kind in KINDS:  # present (at 0) before the first scrape refresh or the first call
    OPEN_OPERATIONS.labels(_kind)
    OPEN_OPERATION_OLDEST_AGE.labels(_kind)
for _action in ACTIONS:
    SCHEDULED.labels(_action)
    SCHEDULER_DUE.labels(_action)
for _outcome in RENEWAL_EVENTS.values():
    RENEWALS.labels(_outcome)


def _bound(metric: Counter) -> Callable[..., Any]:
    """`child(*labels)` → the metric's child for those labels, bound on first use and kept."""
    children: dict[tuple[str, ...], Any] = {}

    def child(*labels: str) -> Any:
        found = children.get(labels)
        if found is None:
            found = children[labels] = metric.labels(*labels)
        return found

    return child


command_outcome = _bound(COMMANDS)
provider_outcome = _bound(PROVIDER_CALLS)

_OPEN_SQL = """
    SELECT kind, count(*), min(opened_at) FROM processor.open_operations GROUP BY kind
"""


def open_operations_refresher(pool: Any, clock: Clock) -> Callable[[], Any]:
    """Refresh the open-operation gauges from the table (on scrape), ages on the business clock."""

    async def refresh() -> None:
        async with pool.acquire() as conn:
            rows = await conn.fetch(_OPEN_SQL, timeout=5)
        now = clock.now()
        seen = {row[0]: row for row in rows}
        for kind in KINDS:
            row = seen.get(kind)
            OPEN_OPERATIONS.labels(kind).set(row[1] if row else 0)
            OPEN_OPERATION_OLDEST_AGE.labels(kind).set(max(0.0, (now - row[2]).total_seconds()) if row else 0.0)

    return refresh
