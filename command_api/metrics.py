"""Prometheus metrics of one API instance, in its own registry (no import-time global state).

Request counts and latency per route template (never per raw path: ids would explode the label
set), commands published per type, Kafka publish latency, idempotency outcomes and webhooks.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "api_http_requests_total", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "api_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.commands_published = Counter(
            "api_commands_published_total", "Commands acknowledged by Kafka", ["command_type"], registry=self.registry
        )
        self.publish_latency = Histogram(
            "api_kafka_publish_seconds", "Time until Kafka acknowledged a command", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.publish_failures = Counter(
            "api_kafka_publish_failures_total", "Commands Kafka did not acknowledge in time", registry=self.registry
        )
        self.idempotency = Counter(
            "api_idempotency_total",
            "Idempotency-Key outcomes: claimed, recovered, replayed, mismatch, in_flight",
            ["result"],
            registry=self.registry,
        )
        self.stage = Histogram(
            "api_command_stage_seconds",
            "Time spent in each step of a command's intake: claim, check, publish, complete, wait",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.webhooks = Counter(
            "api_webhook_notifications_total", "YooKassa notifications by result", ["result"], registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
