"""Prometheus metrics every worker shares, and the tiny server that exposes them (issue 17).

Each worker (processor, projector, notifier, relay) serves `GET /metrics` on its own port
(`PROCESSOR_METRICS_PORT`, `PROJECTOR_METRICS_PORT`, `NOTIFIER_METRICS_PORT`,
`RELAY_METRICS_PORT`; unset = no server) from prometheus_client's default registry, so the
process's own `process_*`/`python_*` metrics come along. The API keeps its own registry
(command_api/metrics.py). Why it is built this way (docs/decisions/0113):

* The server runs ON the worker's event loop (`asyncio.start_server`), not in
  prometheus_client's thread: collectors then read the consumer's and the relay's state on the
  thread that changes it, and gauges that need the database (outbox depth, open operations,
  waiting emails) are refreshed by awaiting their query right before the answer — computed on
  scrape, at most once per `refresh_min_s`, never per message.
* Hot paths only `inc()` pre-bound children; consumer lag is read from aiokafka's fetch state
  when scraped; what a loop already counts (`handled`) is read, not counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from infra.logging import get_logger

log = get_logger(__name__)

Refresher = Callable[[], Awaitable[None]]

# --------------------------------------------------------------------------- shared metrics

DEAD_LETTERS = Counter(
    "billing_dead_letters_total",
    "Records copied to a dead-letter topic: the consumer gave up on them (an operator must look)",
    ["group", "topic", "kind"],
)
REFRESH_FAILURES = Counter(
    "billing_metrics_refresh_failures_total",
    "Scrapes whose database-backed gauges could not be refreshed (their values are stale)",
    ["source"],
)


def count_dead_letter(group: str, topic: str, kind: str) -> None:
    """One record sent to a dead-letter topic (a rare path: `labels()` per call is fine)."""
    DEAD_LETTERS.labels(group, topic, kind).inc()


def port_or_none(value: object) -> object:
    """A pydantic `mode="before"` helper: an empty `*_METRICS_PORT=` means off, like unset."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


# --------------------------------------------------------------------------- consumer loops


class _Loop(Protocol):
    group_id: str
    name: str
    handled: int
    commits: int

    def lag(self) -> Iterable[tuple[str, int, int]]: ...


class ConsumerCollector(Collector):
    """Per live consumer loop: records handled, and lag per partition, read when scraped.

    Lag is what `kafka-consumer-groups` shows: the partition's end (last stable offset under
    read_committed, else the high watermark the last fetch reported) minus the loop's committed
    offset — records fetched but not finished count as lag.
    """

    def __init__(self) -> None:
        self._loops: weakref.WeakSet[Any] = weakref.WeakSet()

    def add(self, loop: _Loop) -> None:
        self._loops.add(loop)

    def discard(self, loop: _Loop) -> None:
        self._loops.discard(loop)

    def collect(self) -> Iterator[Any]:
        handled = CounterMetricFamily("billing_consumer_records_handled", "Records a consumer loop finished handling", labels=["group", "consumer"])
        commits = CounterMetricFamily("billing_consumer_offset_commits", "Offset commits a consumer loop sent to the broker", labels=["group", "consumer"])
        lag = GaugeMetricFamily("billing_consumer_lag", "Records on the partition not yet handled and committed by the group", labels=["group", "topic", "partition"])
        seen: dict[tuple[str, str, str], int] = {}
        for loop in list(self._loops):
            handled.add_metric([loop.group_id, loop.name], loop.handled)
            commits.add_metric([loop.group_id, loop.name], loop.commits)
            try:
                for topic, partition, value in loop.lag():
                    key = (loop.group_id, topic, str(partition))
                    seen[key] = max(value, seen.get(key, 0))
            except Exception as exc:  # noqa: BLE001 - a rebalance mid-scrape must not fail the whole scrape
                log.debug("consumer_lag_unavailable", consumer=loop.name, error=repr(exc))
        for key, value in seen.items():
            lag.add_metric(list(key), value)
        yield handled
        yield commits
        yield lag

    def describe(self) -> Iterator[Any]:
        yield CounterMetricFamily("billing_consumer_records_handled", "", labels=["group", "consumer"])
        yield CounterMetricFamily("billing_consumer_offset_commits", "", labels=["group", "consumer"])
        yield GaugeMetricFamily("billing_consumer_lag", "", labels=["group", "topic", "partition"])


CONSUMERS = ConsumerCollector()
REGISTRY.register(CONSUMERS)


# --------------------------------------------------------------------------- the relay


class _Relay(Protocol):
    name: str
    published: int
    leader: asyncio.Event


class RelayCollector(Collector):
    """Events each live relay published, and whether it leads; the outbox gauges are refreshed on scrape."""

    def __init__(self) -> None:
        self._relays: weakref.WeakSet[Any] = weakref.WeakSet()
        self.outbox_rows: float | None = None
        self.outbox_oldest_age_s: float | None = None

    def add(self, relay: _Relay) -> None:
        self._relays.add(relay)

    def collect(self) -> Iterator[Any]:
        published = CounterMetricFamily("billing_relay_published", "Outbox events Kafka acknowledged (re-publications included)", labels=["relay"])
        leader = GaugeMetricFamily("billing_relay_leader", "1 while this relay holds the outbox lock and publishes", labels=["relay"])
        for relay in list(self._relays):
            published.add_metric([relay.name], relay.published)
            leader.add_metric([relay.name], 1.0 if relay.leader.is_set() else 0.0)
        yield published
        yield leader
        rows = GaugeMetricFamily("billing_outbox_rows", "Events committed but not yet published to Kafka")
        age = GaugeMetricFamily("billing_outbox_oldest_age_seconds", "Age of the oldest unpublished event (0 when the outbox is empty)")
        if self.outbox_rows is not None:
            rows.add_metric([], self.outbox_rows)
            age.add_metric([], self.outbox_oldest_age_s or 0.0)
        yield rows
        yield age

    def describe(self) -> Iterator[Any]:
        yield CounterMetricFamily("billing_relay_published", "", labels=["relay"])
        yield GaugeMetricFamily("billing_relay_leader", "", labels=["relay"])
        yield GaugeMetricFamily("billing_outbox_rows", "")
        yield GaugeMetricFamily("billing_outbox_oldest_age_seconds", "")


RELAYS = RelayCollector()
REGISTRY.register(RELAYS)

# The lowest position is (nearly) the oldest unpublished event: both queries use indexes, and the
# count is capped so a long-stuck outbox does not make every scrape scan millions of rows.
OUTBOX_SQL = """
    SELECT (SELECT count(*) FROM (SELECT 1 FROM eventstore.outbox LIMIT 10000000) AS capped),
           (SELECT extract(epoch FROM clock_timestamp() - e.recorded_at)::float8
            FROM eventstore.events e WHERE e.position = (SELECT min(position) FROM eventstore.outbox))
"""


def outbox_refresher(database_url: str) -> Refresher:
    """Refresh the outbox gauges over one lazily opened connection of their own."""
    import asyncpg

    state: dict[str, Any] = {"conn": None}

    async def refresh() -> None:
        conn = state["conn"]
        if conn is None or conn.is_closed():
            conn = state["conn"] = await asyncpg.connect(
                database_url, timeout=5, server_settings={"application_name": "billing-relay-metrics"}
            )
        try:
            rows, age = await conn.fetchrow(OUTBOX_SQL, timeout=5)
        except BaseException:
            state["conn"] = None
            with contextlib.suppress(Exception):
                conn.terminate()
            raise
        RELAYS.outbox_rows, RELAYS.outbox_oldest_age_s = float(rows), max(0.0, float(age or 0.0))

    async def close() -> None:
        if state["conn"] is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(state["conn"].close(), 5)

    refresh.close = close  # type: ignore[attr-defined]
    return refresh


# --------------------------------------------------------------------------- the server


class MetricsServer:
    """`GET /metrics` (Prometheus text format) on `host:port`, served on the running event loop.

    `refreshers` are awaited (each at most `refresh_timeout_s`, together at most once every
    `refresh_min_s`) before the registry is rendered; one that fails is logged and counted in
    `billing_metrics_refresh_failures_total{source}`, and its gauges keep their last values.
    """

    def __init__(
        self,
        port: int,
        *,
        host: str = "0.0.0.0",  # noqa: S104 - scraped from another host or container
        registry: CollectorRegistry = REGISTRY,
        refreshers: dict[str, Refresher] | None = None,
        refresh_min_s: float = 2.0,
        refresh_timeout_s: float = 5.0,
    ) -> None:
        self.port, self.host, self.registry = port, host, registry
        self.refreshers = dict(refreshers or {})
        self.refresh_min_s, self.refresh_timeout_s = refresh_min_s, refresh_timeout_s
        self._refreshed_at = float("-inf")
        self._refreshing = asyncio.Lock()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> MetricsServer:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        log.info("metrics_served", host=self.host, port=self.port)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for refresher in self.refreshers.values():
            close = getattr(refresher, "close", None)
            if close is not None:
                await close()

    async def render(self) -> bytes:
        """Refresh the database-backed gauges (if due), then the registry in the text format."""
        await self.refresh()
        return generate_latest(self.registry)

    async def refresh(self) -> None:
        async with self._refreshing:  # concurrent scrapes share one refresh
            if time.monotonic() - self._refreshed_at < self.refresh_min_s:
                return
            for source, refresher in self.refreshers.items():
                try:
                    await asyncio.wait_for(refresher(), self.refresh_timeout_s)
                except Exception as exc:  # noqa: BLE001 - a scrape must answer even with the database away
                    REFRESH_FAILURES.labels(source).inc()
                    log.warning("metrics_refresh_failed", source=source, error=repr(exc))
            self._refreshed_at = time.monotonic()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            request_line = await asyncio.wait_for(reader.readline(), 2)
            if request_line.split(b" ")[1:2] in ([b"/metrics"], [b"/"]):
                status, body, kind = b"200 OK", await self.render(), CONTENT_TYPE_LATEST.encode()
            else:
                status, body, kind = b"404 Not Found", b"not found: try /metrics\n", b"text/plain"
            await respond(writer, status, body, kind)
        writer.close()


async def respond(writer: asyncio.StreamWriter, status: bytes, body: bytes, kind: bytes) -> None:
    """Write one HTTP/1.1 answer and let the client close (`Connection: close`)."""
    writer.write(
        b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind + b"\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n" + body
    )
    await writer.drain()


async def serve_metrics(port: int | None, refreshers: dict[str, Refresher] | None = None) -> MetricsServer | None:
    """Start a `MetricsServer` when `port` is set (the `*_METRICS_PORT` variables); None when it is not."""
    if not port:
        return None
    return await MetricsServer(port, refreshers=refreshers).start()
