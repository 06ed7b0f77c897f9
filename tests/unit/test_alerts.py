"""The alert rules and the dashboard speak about metrics the services really export.

A rule over a metric nobody registers never fires, and a panel over one stays empty: both look
fine until the day they are needed. The names are collected from the registries themselves
(every module that defines metrics is imported, then each registered family is expanded into the
series names Prometheus stores: `_total` for counters, `_bucket`/`_count`/`_sum` for histograms).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml
from prometheus_client import REGISTRY, CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "billing.json"
METRIC_MODULES = (
    "infra.metrics",
    "infra.kafka",
    "relay",
    "payment_processor.metrics",
    "payment_processor.adapters.gateway",
    "notifier.metrics",
    "projector.service",
)
BUILTIN = {"up"}  # synthesised by Prometheus for every target
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "inf", "nan", "le",
}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created", ""),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}


def series_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def exported() -> set[str]:
    """Every series name a billing service can export (workers' default registry and the API's)."""
    for module in METRIC_MODULES:
        importlib.import_module(module)
    from command_api.metrics import Metrics

    return series_names(REGISTRY) | series_names(Metrics().registry)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, labels and durations removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, label_replace arguments)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # grouping labels
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word, rest = match.group(0), text[match.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue  # a function call or a keyword
        if re.fullmatch(r"\d+[smhdwy]", word) or text[max(0, match.start() - 1)].isdigit():
            continue
        names.add(word)
    return names


def rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_targets(panels: list[dict]) -> Iterator[tuple[str, str]]:
    for panel in panels:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
        yield from dashboard_targets(panel.get("panels", []))


def test_the_expression_parser_finds_metrics_and_skips_promql():
    expr = 'histogram_quantile(0.99, sum by (le, op) (rate(a_seconds_bucket{x="y z"}[5m]))) / clamp_min(sum(b_total offset 1h), 1e-9) > 0.2 and on(job) up'
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "up"}


def test_every_alert_reads_only_metrics_a_service_registers():
    names = exported()
    for rule in rules():
        used = metric_names(rule["expr"])
        assert used, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        unknown = used - names - BUILTIN
        assert not unknown, f"alert {rule['alert']} reads {sorted(unknown)}, which no service registers"


def test_every_dashboard_panel_reads_only_registered_metrics():
    names = exported()
    dashboard = json.loads(DASHBOARD.read_text())
    targets = list(dashboard_targets(dashboard["panels"]))
    assert len(targets) >= 20
    for title, expr in targets:
        unknown = metric_names(expr) - names - BUILTIN
        assert not unknown, f"panel {title!r} reads {sorted(unknown)}, which no service registers"


def test_the_issue_alerts_exist_and_tell_an_operator_what_to_do():
    by_name = {rule["alert"]: rule for rule in rules()}
    wanted = {
        "BillingOutboxStuck": "billing_outbox_oldest_age_seconds",
        "BillingConsumerLagGrowing": "billing_consumer_lag",
        "BillingUnknownOperationOverAnHour": "billing_open_operation_oldest_age_seconds",
        "BillingDeadLetters": "billing_dead_letters_total",
        "BillingMailgunFailing": "billing_mailgun_available",
        "BillingYooKassaCredentialsRejected": "billing_yookassa_credentials_rejected_total",
    }
    for alert, metric in wanted.items():
        assert alert in by_name, f"missing alert {alert}"
        assert metric in metric_names(by_name[alert]["expr"])
    assert "3600" in by_name["BillingUnknownOperationOverAnHour"]["expr"]
    for rule in by_name.values():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_the_dashboard_covers_every_billing_metric_family():
    """A metric nobody charts or alerts on is either missing from the dashboard or not needed."""
    dashboard = json.loads(DASHBOARD.read_text())
    charted = set().union(*(metric_names(expr) for _, expr in dashboard_targets(dashboard["panels"])))
    for module in METRIC_MODULES:
        importlib.import_module(module)
    families = {family.name for family in REGISTRY.collect() if family.name.startswith("billing_")}
    uncharted = {f for f in families if not any(name.startswith(f) for name in charted)}
    assert not uncharted, f"no panel shows {sorted(uncharted)}"
