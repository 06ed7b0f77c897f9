"""The container deployment, checked without a Docker engine: docker-compose.yml, the Dockerfile,
`.env.example` and the deploy example must describe the product the issue asks for, stay in sync
with every service's settings, and hand each container only the secrets it uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from admin.config import ADMIN_DEV_ONLY_VARIABLES, ADMIN_VARIABLES
from command_api.config import ApiSettings
from eventstore.settings import Settings
from notifier.config import NotifierServiceSettings, NotifierSettings
from payment_processor.config import ProcessorServiceSettings, ProcessorSettings
from payment_processor.scheduler import SchedulerSettings
from projector.consumer import ProjectorSettings

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = {
    "command_api": "command_api",
    "relay": "eventstore.relay",
    "payment_processor": "payment_processor",
    "projector": "projector",
    "notifier": "notifier",
    "admin": "admin",
}
SETTINGS_CLASSES = (Settings, ApiSettings, ProcessorServiceSettings, NotifierServiceSettings, ProjectorSettings)
# Each secret and the one service that uses it.
SECRETS = {
    "JWT_SECRET": "command_api",
    "JWT_PUBLIC_KEY": "command_api",
    "YOOKASSA_SHOP_ID": "payment_processor",
    "YOOKASSA_SECRET_KEY": "payment_processor",
    "MAILGUN_API_KEY": "notifier",
    "SERVICE_TOKEN": "admin",
    "DJANGO_SECRET_KEY": "admin",
}


def env_names(cls: type) -> set[str]:
    prefix = cls.model_config.get("env_prefix", "") or ""
    return {(prefix + name).upper() for name in cls.model_fields}


# What each component may be given: its settings classes' variables (the admin: what it reads).
ALLOWED = {
    "command_api": env_names(ApiSettings),
    "relay": env_names(Settings),
    "migrate": env_names(Settings),
    "payment_processor": env_names(ProcessorServiceSettings) | env_names(ProcessorSettings) | env_names(SchedulerSettings),
    "projector": env_names(ProjectorSettings),
    "notifier": env_names(NotifierServiceSettings) | env_names(NotifierSettings),
    "admin": set(ADMIN_VARIABLES),
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
    assert "env_file" not in svc, f"{service} would receive every variable of the env file"
    assert svc["healthcheck"]["test"], f"{service} has no health check"
    depends = svc["depends_on"]
    assert depends["kafka"] == {"condition": "service_healthy"}
    assert depends["postgres"] == {"condition": "service_healthy"}
    assert depends["migrate"] == {"condition": "service_completed_successfully"}
    env = svc["environment"]
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["ENVIRONMENT"] == "${ENVIRONMENT:-production}"
    if service != "admin":  # the admin talks to the API and PostgreSQL only
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


@pytest.mark.parametrize("service", sorted(ALLOWED))
def test_each_container_receives_only_the_variables_it_uses(compose, service):
    env = set(compose["services"][service]["environment"])
    assert env <= ALLOWED[service], f"{service} is given variables it never reads: {sorted(env - ALLOWED[service])}"
    for secret, owner in SECRETS.items():
        if service != owner:
            assert secret not in env, f"{service} receives {secret}, which only {owner} uses"
    for service_name, svc in compose["services"].items():
        assert "env_file" not in svc, service_name


def test_no_settings_class_has_a_field_for_another_services_secret():
    prefixes = {"JWT_": ApiSettings, "YOOKASSA_SHOP_ID": ProcessorServiceSettings, "YOOKASSA_SECRET_KEY": ProcessorServiceSettings,
                "YOOKASSA_API_URL": ProcessorServiceSettings, "MAILGUN_": NotifierServiceSettings, "SERVICE_TOKEN": None,
                "DJANGO_": None}
    for cls in (*SETTINGS_CLASSES, NotifierSettings, ProcessorSettings, SchedulerSettings):
        for name in env_names(cls):
            for prefix, owner in prefixes.items():
                if name.startswith(prefix):
                    assert cls is owner, f"{cls.__name__} has {name}, which belongs to {owner and owner.__name__ or 'the admin'}"
    assert not {"JWT_SECRET", "YOOKASSA_SECRET_KEY", "MAILGUN_API_KEY"} & ADMIN_VARIABLES
    assert ADMIN_DEV_ONLY_VARIABLES == {"JWT_SECRET"}  # read only outside production (test_production_settings)


def test_the_deployment_defaults_to_production_and_refuses_blank_secrets(compose):
    """compose interpolates `${VAR:?}` for every secret: it will not start with one left blank."""
    services = compose["services"]
    for secret, owner in SECRETS.items():
        if secret in ("JWT_SECRET", "JWT_PUBLIC_KEY"):  # one of secret / key / JWKS: the API checks which
            continue
        assert services[owner]["environment"][secret].startswith(f"${{{secret}:?"), secret
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    example = (ROOT / "deploy" / ".env.production.example").read_text()
    assert re.search(r"^ENVIRONMENT=production$", example, re.M)
    for name in ("POSTGRES_PASSWORD", "JWT_SECRET", "YOOKASSA_SHOP_ID", "YOOKASSA_SECRET_KEY", "MAILGUN_API_KEY",
                 "SERVICE_TOKEN", "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"):
        assert re.search(rf"^{name}=$", example, re.M), f"{name} must be a blank to fill in"
    # every variable compose interpolates is in the deploy example (set or commented)
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "docker-compose.yml").read_text()))
    listed = set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", example, re.M))
    optional = {"COMMANDS_TOPIC", "EVENTS_TOPIC", "COMMANDS_DLQ_TOPIC", "EVENTS_DLQ_TOPIC", "LOG_LEVEL", "JWT_PUBLIC_KEY",
                "JWT_SERVICE_MAX_TOKEN_AGE_S"}
    assert used - listed <= optional, sorted(used - listed - optional)


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
    every = set(ADMIN_VARIABLES).union(*(env_names(cls) for cls in (*SETTINGS_CLASSES, NotifierSettings, ProcessorSettings)))
    missing = every - listed
    assert not missing, f".env.example lacks {sorted(missing)}"
    # the uncommented values parse into every settings class (pydantic-settings reads the file like a .env)
    env_file = tmp_path / ".env"
    env_file.write_text(text)
    for cls in SETTINGS_CLASSES:
        cls(_env_file=env_file, environment="development")  # type: ignore[call-arg]
    parsed = NotifierServiceSettings(_env_file=env_file)  # type: ignore[call-arg]
    assert parsed.mailgun_from == "Billing <billing@mg.billing.local>"
