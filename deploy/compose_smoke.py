"""`make compose-smoke`: the container deployment, started for real, sells one subscription.

Where a Docker daemon answers (`docker info`), it builds the image and brings docker-compose.yml
up with `--profile sandbox` (the YooKassa and Mailgun emulators) as the project `billing-smoke`,
waits until every service is healthy, seeds the plans, buys the monthly plan through the API,
pays on the sandbox's payment page with a test card, waits for the subscription to turn active,
and tears everything down with its volumes. Where there is no daemon it says so and exits 0.

Compose sees only SMOKE_ENV (plus PATH/HOME/DOCKER_*): ENVIRONMENT=development with the
sandboxes' credentials, like `.env.example`, pointed at the emulators' service names. The host
ports 8000/8001/8010/8020 must be free (stop `make up` first).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "billing-smoke"
API = "http://127.0.0.1:8000"
SKIPPED = "no Docker daemon: compose-smoke skipped"
JWT_SECRET = "compose-smoke-jwt-secret-not-for-production-0123456789"
SUCCESS_CARD = "5555555555554444"


def smoke_env() -> dict[str, str]:
    """What compose interpolates for the smoke run (a development deployment against the sandboxes)."""
    from command_api.config import ApiSettings
    from infra.tokens import mint_token

    api = ApiSettings(environment="development", jwt_secret=JWT_SECRET, jwt_algorithm="HS256")
    service_token = mint_token(api.jwt_secret, user_id="admin-service", role="service", operators=["smoke"], ttl_s=86_400,
                               algorithm="HS256")
    return {
        "ENVIRONMENT": "development",
        "POSTGRES_PASSWORD": "compose-smoke-postgres",
        "JWT_SECRET": JWT_SECRET,
        "JWT_ALGORITHM": "HS256",
        # the sandbox notifies from the compose network's private address
        "YOOKASSA_TRUSTED_NETWORKS": "127.0.0.1/32,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16",
        "YOOKASSA_SHOP_ID": "123456",
        "YOOKASSA_SECRET_KEY": "test_sandbox_secret",
        "YOOKASSA_API_URL": "http://yookassa-sandbox:8010/v3",
        "YOOKASSA_RETURN_URL": f"{API}/v1/return",
        "MAILGUN_API_KEY": "key-sandbox",
        "MAILGUN_DOMAIN": "mg.billing.local",
        "MAILGUN_API_URL": "http://mailgun-sandbox:8020/v3",
        "MAILGUN_FROM": "Billing <billing@mg.billing.local>",
        "SERVICE_TOKEN": service_token,
        "DJANGO_SECRET_KEY": "compose-smoke-django-secret-key-not-for-production",
        "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1",
        "DJANGO_SECURE": "false",
    }


def docker_daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def compose(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    command = ["docker", "compose", "-p", PROJECT, "--profile", "sandbox", *args]
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, env=env, check=check)


def buy_one_subscription() -> None:
    import httpx

    from devstack import demo

    os.environ.update(ENVIRONMENT="development", JWT_SECRET=JWT_SECRET, JWT_ALGORITHM="HS256")  # for demo._token
    user = f"smoke-{uuid.uuid4().hex[:8]}"
    auth = {"Authorization": f"Bearer {demo._token(user_id=user, email=f'{user}@example.com', locale='en')}"}
    with httpx.Client(base_url=API, timeout=15) as client:
        demo._wait("the command API", lambda: demo._ready(f"{API}/readyz"), timeout=120)
        demo.seed(client, demo._token(user_id="smoke-seeder", role="operator"))
        answer = client.post("/v1/subscriptions", json={"plan_id": "monthly", "auto_renew": False},
                             headers={**auth, "Idempotency-Key": str(uuid.uuid4()), "Prefer": "wait=10"})
        command = demo._json(answer)
        if command.get("status") != "succeeded":
            command = demo._wait("the checkout", lambda: (c := demo._json(client.get(
                f"/v1/commands/{command['command_id']}", headers=auth))).get("status") in ("succeeded", "rejected", "failed") and c)
        if command["status"] != "succeeded":
            raise demo.DemoError(f"the purchase ended {command['status']}: {command}")
        outcome = command["outcome"]
        print(f"paying on {outcome['confirmation_url']}", flush=True)
        httpx.post(outcome["confirmation_url"], data={"card_number": SUCCESS_CARD, "action": "pay"}, timeout=10,
                   follow_redirects=True)
        sub = demo._until_subscription(client, f"/v1/subscriptions/{outcome['subscription_id']}", auth,
                                       lambda s: s["status"] == "active", timeout=120)
        print(f"subscription {sub['subscription_id']} is {sub['status']} until {sub['period_end']}", flush=True)


def main() -> int:
    if not docker_daemon():
        print(SKIPPED)
        return 0
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME") or k.startswith("DOCKER_")}
    env.update(smoke_env())
    compose("down", "-v", "--remove-orphans", env=env, check=False)  # leftovers of an interrupted run
    try:
        compose("up", "-d", "--build", "--wait", "--wait-timeout", "600", env=env)
        buy_one_subscription()
        print("compose-smoke: passed")
        return 0
    except Exception as exc:  # noqa: BLE001 - report, show the logs, tear down, fail
        print(f"compose-smoke: FAILED: {exc}", file=sys.stderr)
        compose("ps", "-a", env=env, check=False)
        compose("logs", "--tail", "60", env=env, check=False)
        return 1
    finally:
        compose("down", "-v", "--remove-orphans", env=env, check=False)


if __name__ == "__main__":
    sys.exit(main())
