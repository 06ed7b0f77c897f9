"""`bench.e2e`'s pure helpers: the open-loop schedule, the counter arithmetic, the same-work plan.

No timing is asserted anywhere: these check the arithmetic that turns counters into "per purchase"
figures and counts into the ceiling's statements, on synthetic numbers.
"""

from __future__ import annotations

import pytest

from bench import _counters as counters
from bench import _samework as samework
from bench.e2e import arrival_offsets, host_drift

# --------------------------------------------------------------------------- the open-loop schedule


def test_fixed_spacing_is_exactly_one_over_the_rate() -> None:
    offsets = arrival_offsets(50, 2, poisson=False)
    assert len(offsets) == 100
    assert offsets[:3] == [0.0, 0.02, 0.04]
    assert offsets[-1] == pytest.approx(1.98)


def test_poisson_arrivals_average_the_rate_and_do_not_depend_on_completions() -> None:
    offsets = arrival_offsets(50, 200, seed=7)
    assert offsets == sorted(offsets) and 0 < offsets[0] and offsets[-1] < 200
    assert len(offsets) / 200 == pytest.approx(50, rel=0.03)
    gaps = [b - a for a, b in zip(offsets, offsets[1:], strict=False)]
    assert min(gaps) < 0.002 < 0.1 < max(gaps)  # exponential gaps: bursts and lulls, not a metronome
    assert arrival_offsets(50, 200, seed=7) == offsets  # the schedule is fixed before the run


def test_no_rate_no_arrivals() -> None:
    assert arrival_offsets(0, 10) == [] == arrival_offsets(5, 0)


# --------------------------------------------------------------------------- counters


def metrics_text() -> str:
    """What a service's /metrics answers (prometheus_client's own exposition, not a hand-written copy)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.core import CounterMetricFamily

    registry = CollectorRegistry()
    Counter("api_http_requests", "", ["method", "route", "status"], registry=registry).labels(
        "POST", "/v1/subscriptions", "200").inc(12)
    Histogram("api_http_request_duration_seconds", "", ["method"], registry=registry).labels("POST").observe(0.1)

    class Loops:
        def collect(self):  # like infra.metrics.ConsumerCollector: one sample per consumer loop
            handled = CounterMetricFamily("billing_consumer_records_handled", "", labels=["group", "consumer"])
            handled.add_metric(["g", "c1"], 5)
            handled.add_metric(["g", "c2"], 3)
            yield handled

    registry.register(Loops())
    return generate_latest(registry).decode()


def test_parse_metrics_keeps_counted_families_and_sums_consumers_of_a_group() -> None:
    got = counters.parse_metrics("api", metrics_text())
    assert got == {
        "api|api_http_requests{method=POST,route=/v1/subscriptions,status=200}": 12.0,
        "api|billing_consumer_records_handled{group=g}": 8.0,
    }


def test_instances_of_a_service_are_summed() -> None:
    merged = counters.merge_instances({"processor-1|x{}": 2.0, "processor-2|x{}": 3.0, "api|y{}": 1.0,
                                       "api-2|y{}": 1.0, "pg:db:xact_commit": 9.0})
    assert merged == {"processor|x{}": 5.0, "api|y{}": 2.0, "pg:db:xact_commit": 9.0}


def test_per_purchase_subtracts_the_idle_rate_over_the_same_time() -> None:
    idle = {"pg:db:xact_commit": 50.0, "kafka:produced:events": 0.0}  # 10 s idle: 5 tx/s of relay polls
    before = {"pg:db:xact_commit": 1000.0, "kafka:produced:events": 60.0}
    after = {"pg:db:xact_commit": 1000.0 + 20 * 25 + 4 * 5, "kafka:produced:events": 180.0, "pg:table:t.n_tup_ins": 20.0}
    got = counters.per_purchase(before, after, purchases=20, seconds=4.0, idle=idle, idle_seconds=10.0)
    assert got == {"pg:db:xact_commit": 25.0, "kafka:produced:events": 6.0, "pg:table:t.n_tup_ins": 1.0}


def test_per_purchase_clamps_below_zero_and_needs_purchases() -> None:
    got = counters.per_purchase({"a": 10.0}, {"a": 11.0}, purchases=1, seconds=10.0, idle={"a": 5.0}, idle_seconds=10.0)
    assert got == {}
    with pytest.raises(ValueError):
        counters.per_purchase({}, {}, purchases=0, seconds=1.0)


def test_summary_adds_up_the_headline_io() -> None:
    counts = {
        "api|api_http_requests{method=GET}": 2.0, "api|api_http_requests{method=POST}": 2.0,
        "processor|billing_provider_calls{operation=create_payment}": 1.0,
        "processor|billing_provider_calls{operation=find_payment}": 1.0,
        "kafka:produced:commands": 2.0, "kafka:produced:events": 6.0,
        "kafka:consumed:projector:events": 6.0, "kafka:consumed:notifier:events": 6.0,
        "pg:db:xact_commit": 24.0, "pg:db:xact_rollback": 1.0,
        "pg:db:tup_inserted": 26.0, "pg:db:tup_updated": 10.0, "pg:db:tup_deleted": 8.0,
        "pg:table:read.payments.idx_scan": 7.0, "pg:table:read.subscriptions.seq_scan": 1.0,
        "sandbox:mailgun_messages": 1.0,
    }
    got = counters.summary(counts)
    assert got["http_in_api"] == 4 and got["provider_calls"] == 2 and got["emails"] == 1
    assert got["kafka_produced"] == 8 and got["kafka_consumed"] == 12
    assert got["pg_transactions"] == 25 and got["pg_rows_written"] == 44 and got["pg_scans"] == 8
    assert set(counters.group(counts)) >= {"Kafka records produced", "PostgreSQL database", "api: http in"}


# --------------------------------------------------------------------------- the same-work plan


@pytest.mark.parametrize("rate", [0.0, 0.33, 1.0, 1.33, 2.5, 9.42])
def test_spread_does_floor_of_n_times_the_rate_evenly(rate: float) -> None:
    for n in (1, 3, 7, 100):
        done = [samework.spread(rate, k) for k in range(n)]
        assert sum(done) == int(n * rate + 1e-9)
        assert max(done, default=0) - min(done, default=0) <= 1  # never two in one unit and none in another


def test_plan_assigns_tables_to_their_owners_and_reads_net_of_updates() -> None:
    counts = {
        "pg:table:eventstore.events.n_tup_ins": 6.0, "pg:table:eventstore.events.idx_scan": 5.8,
        "pg:table:eventstore.outbox.n_tup_ins": 6.0, "pg:table:eventstore.outbox.n_tup_del": 6.0,
        "pg:table:read.payments.n_tup_ins": 1.0, "pg:table:read.payments.n_tup_upd": 1.33,
        "pg:table:read.payments.idx_scan": 7.17, "pg:table:read.subscriptions.seq_scan": 1.17,
        "pg:table:notifier.emails.n_tup_ins": 1.0, "pg:table:notifier.emails.n_tup_upd": 1.0,
        "pg:table:notifier.emails.idx_scan": 2.0,
        "pg:table:api.idempotency_keys.n_tup_ins": 1.0,
        "kafka:produced:commands": 2.0, "kafka:produced:events": 6.0, "sandbox:mailgun_messages": 1.0,
    }
    got = samework.plan(counts)
    assert got["commands"] == 2 and got["events"] == 6 and got["emails"] == 1
    tables = got["tables"]
    assert tables["processor"] == {"eventstore.events": {"ins": 6.0, "upd": 0.0, "del": 0.0, "reads": 5.8}}
    assert tables["projector"] == {"read.payments": {"ins": 1.0, "upd": 1.33, "del": 0.0, "reads": 0.0}}
    assert tables["api"]["read.payments"]["reads"] == pytest.approx(7.17 - 1.33)
    assert tables["notifier"] == {"notifier.emails": {"ins": 1.0, "upd": 1.0, "del": 0.0, "reads": 1.0}}
    # written by the bare pipeline's own structure, and sequential scans are never replayed
    assert not any(t in work for work in tables.values() for t in samework.STRUCTURAL_TABLES)
    assert not any("read.subscriptions" in work for work in tables.values())


def test_the_floor_keeps_every_hop_with_one_event_per_command() -> None:
    got = samework.plan(samework.MINIMAL_IO)
    # both commands, each answered by one event; both provider calls; the email
    assert (got["commands"], got["events"], got["emails"], got["provider_calls"]) == (2, 2, 1, 2)
    tables = got["tables"]
    # the processor reads its stream and appends one event per command
    assert tables["processor"] == {"eventstore.events": {"ins": 2.0, "upd": 0.0, "del": 0.0, "reads": 2.0}}
    # one read-model row, written by the projector and read twice by the API (the user's polls)
    assert tables["projector"] == {"read.subscriptions": {"ins": 1.0, "upd": 1.0, "del": 0.0, "reads": 0.0}}
    assert tables["api"] == {"read.subscriptions": {"ins": 0.0, "upd": 0.0, "del": 0.0, "reads": 2.0}}
    assert tables["notifier"] == {} and tables["relay"] == {}  # only their structural rows


def test_rows_replay_the_counted_operations_per_unit() -> None:
    rows = samework.Rows({"read.payments": {"ins": 1.0, "upd": 1.33, "del": 0.0, "reads": 2.0}}, units_per_purchase=2.0)
    ops: dict[str, int] = {}
    for _ in range(6):  # 3 purchases of 2 units each
        for op, _sql, args in rows.next_unit():
            ops[op] = ops.get(op, 0) + len(args)
    assert ops == {"ins": 3, "upd": 3, "reads": 6}  # floor(3 × 1.33) = 3 updates


def test_the_bare_processes_counters_read_like_the_products() -> None:
    counts = samework.Counts()
    for _ in range(3):
        counts.inc("api_http_requests", method="GET", route="/v1/subscriptions/{subscription_id}")
    counts.inc("billing_provider_calls", operation="create_payment")
    got = counters.summary(counters.parse_metrics("api", counts.render().decode())
                           | counters.parse_metrics("processor", counts.render().decode()))
    assert got["http_in_api"] == 3 and got["provider_calls"] == 1


def test_host_drift_is_the_load_clients_cpu_ratio_and_needs_both() -> None:
    slow = {"cpu_ms_per_purchase_by_process": {"bench client": 11.2, "api": 12.5}}
    fast = {"cpu_ms_per_purchase_by_process": {"bench client": 7.0, "bare api": 4.2}}
    assert host_drift(slow, fast) == 1.6
    assert host_drift(slow, {"cpu_ms_per_purchase_by_process": {}}) is None
