"""The container deployment, checked without a Docker engine: docker-compose.yml, the Dockerfile
and `.env.example` must describe the product the issue asks for, and stay in sync with Settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from eventstore.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = {
    "command_api": "command_api",
    "relay": "eventstore.relay",
    "payment_processor": "payment_processor",
    "projector": "projector",
    "notifier": "notifier",
    "admin": "admin",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_kafka_is_the_official_image_in_kraft_mode(compose):
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert "zookeeper" not in str(kafka).lower()
    # a single node: internal topics must have one replica or groups and transactions hang
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert int(env[key]) == 1
    assert kafka["healthcheck"]["test"]
    assert any(":/var/lib/kafka/data" in v for v in kafka["volumes"])


def test_postgres_has_a_health_check_and_a_volume(compose):
    pg = compose["services"]["postgres"]
    assert pg["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert pg["volumes"]


@pytest.mark.parametrize("service,module", sorted(COMPONENTS.items()))
def test_every_component_is_a_healthy_service_after_its_dependencies(compose, service, module):
    svc = compose["services"][service]
    assert svc["build"] == "."
    assert svc["command"] == ["python", "-m", module]
    assert svc["env_file"] == ".env" or ".env" in svc["env_file"]
    assert svc["healthcheck"]["test"], f"{service} has no health check"
    depends = svc["depends_on"]
    assert depends["kafka"] == {"condition": "service_healthy"}
    assert depends["postgres"] == {"condition": "service_healthy"}
    assert depends["migrate"] == {"condition": "service_completed_successfully"}
    env = svc["environment"]
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_every_dependency_is_a_defined_service_with_a_health_check(compose):
    services = compose["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep}, which has no health check"


def test_http_services_listen_on_all_interfaces_inside_the_container(compose):
    assert compose["services"]["command_api"]["environment"]["API_HOST"] == "0.0.0.0"
    assert compose["services"]["admin"]["environment"]["ADMIN_HOST"] == "0.0.0.0"


def test_dockerfile_builds_the_python_services():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]", dockerfile, re.M)
    assert "pip install" in dockerfile
    assert re.search(r"^USER (?!root)", dockerfile, re.M), "services must not run as root"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".stack", ".kafka", ".env", ".git"} <= set(ignored)


def test_env_example_lists_every_setting_with_a_valid_value(tmp_path):
    text = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", text, re.M))
    missing = {name.upper() for name in Settings.model_fields} - listed
    assert not missing, f".env.example lacks {sorted(missing)}"
    # the uncommented values parse into Settings (pydantic-settings reads the file like a .env)
    env_file = tmp_path / ".env"
    env_file.write_text(text)
    parsed = Settings(_env_file=env_file)
    assert parsed.mailgun_from == "Billing <billing@mg.billing.local>"
