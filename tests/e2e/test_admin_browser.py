"""An operator in a real browser extends a subscription, and sees the new end date arrive.

Everything is real: Debian's Chromium driven by Playwright, `python -m admin` under uvicorn, the
command API, Kafka, the payment processor, the outbox relay and the projector, on a fresh
database and topics of this test. A plan and a granted subscription are set up through the
command API (as an operator would); then the browser logs in, searches the subscription by its
user id, extends it by 30 days, and reloads the subscription page until the projector has
caught up and the page shows the old end + 30 days (saved as a screenshot under `test-output/`).
Then a second grant of the same plan goes through the processor and comes back rejected, with its
reason shown to the operator. Last, a reconciliation finds a payment at YooKassa that names none
of ours; the operator filters the Reconciliation page by kind, opens it and marks it resolved.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import jwt
import psycopg
import pytest

from infra.settings import Settings, plain_url
from tests.fixtures.admin import ADMIN_JWT_SECRET
from tests.support.processes import ROOT, ManagedProcess, free_port
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ADMIN_TZ = "Europe/Moscow"
SCREENSHOT = ROOT / "test-output" / "admin-subscription.png"
PIPELINE = ("command_api", "payment_processor", "projector", "relay", "admin")


def _missing_parts() -> list[str]:
    missing = []
    for module in PIPELINE:
        name = module if module == "relay" else f"{module}.__main__"
        if importlib.util.find_spec(name) is None:
            missing.append(module)
    return missing


@pytest.fixture(scope="module")
def pipeline(admin_database: Settings, settings: Settings, yookassa_sandbox: Any) -> Iterator[dict[str, Any]]:
    """Every process of the write and read paths, on the admin's fresh database and fresh topics."""
    if missing := _missing_parts():
        pytest.fail(f"parts of the pipeline are missing: {', '.join(missing)}")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    tag = uuid.uuid4().hex[:10]
    api_port, admin_port, processor_health = free_port(), free_port(), free_port()
    env = {
        "ENVIRONMENT": "test",
        "DATABASE_URL": admin_database.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "COMMANDS_TOPIC": f"test.admin-e2e.commands.{tag}",
        "EVENTS_TOPIC": f"test.admin-e2e.events.{tag}",
        "COMMANDS_DLQ_TOPIC": f"test.admin-e2e.commands.dlq.{tag}",
        "EVENTS_DLQ_TOPIC": f"test.admin-e2e.events.dlq.{tag}",
        "PROCESSOR_GROUP_ID": f"processor-{tag}",
        "PROCESSOR_CONSUMERS": "2",
        "PROCESSOR_HEALTH_PORT": str(processor_health),
        "PROJECTOR_GROUP_ID": f"projector-{tag}",
        "JWT_SECRET": ADMIN_JWT_SECRET,
        "BILLING_CLOCK": "system",
        **yookassa_sandbox.env(),
        "PROCESSOR_RECONCILE_ENABLED": "false",  # the reconciliation below is run by hand
    }
    api_url = f"http://127.0.0.1:{api_port}"
    admin_url = f"http://127.0.0.1:{admin_port}"
    processes = [
        ManagedProcess("admin-e2e-api", "command_api", env={**env, "API_PORT": str(api_port)},
                       ready_url=f"{api_url}/healthz", ready_timeout=60),
        ManagedProcess("admin-e2e-processor", "payment_processor", env=env,
                       ready_url=f"http://127.0.0.1:{processor_health}/healthz", ready_timeout=60),
        ManagedProcess("admin-e2e-relay", "relay", env=env),
        ManagedProcess("admin-e2e-projector", "projector", env=env),
        ManagedProcess("admin-e2e-admin", "admin",
                       env={**env, "ADMIN_PORT": str(admin_port), "COMMAND_API_URL": api_url,
                            "ADMIN_TIME_ZONE": ADMIN_TZ},
                       ready_url=f"{admin_url}/healthz", ready_timeout=60),
    ]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.wait_ready_sync()
        yield {"api_url": api_url, "admin_url": admin_url, "env": env, "processes": processes}
    finally:
        # SIGTERM to all at once: each consumer takes a second or two to leave its group.
        with concurrent.futures.ThreadPoolExecutor(len(processes)) as pool:
            list(pool.map(lambda process: process.terminate(), processes))


def operator_token(operator: str) -> dict[str, str]:
    now = int(time.time())
    token = jwt.encode({"sub": "admin-service", "role": "service", "operators": [operator], "typ": "access", "iat": now,
                        "exp": now + 600},
                       ADMIN_JWT_SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}", "X-Operator": operator}


def fetch_one(settings: Settings, sql: str, *params: Any) -> Any:
    with psycopg.connect(plain_url(settings.database_url), autocommit=True, connect_timeout=10) as conn:
        return conn.execute(sql, params).fetchone()


async def test_operator_extends_a_subscription_in_a_real_browser(pipeline, admin_database: Settings) -> None:
    from playwright.async_api import async_playwright

    api, admin_url = pipeline["api_url"], pipeline["admin_url"]
    plan_id = f"e2e-{uuid.uuid4().hex[:8]}"
    user_id = f"user-{uuid.uuid4().hex[:12]}"

    # ---- set-up through the command API, as an operator: a plan, then a granted subscription
    async with httpx.AsyncClient(base_url=api, timeout=httpx.Timeout(20.0), trust_env=False) as client:
        created = await client.post("/v1/admin/plans", headers={**operator_token("setup"), "Idempotency-Key": plan_id,
                                                                 "Prefer": "wait=10"},
                                    json={"plan_id": plan_id, "name": "Browser plan", "period_days": 30,
                                          "price": {"amount": "1490.00", "currency": "RUB"}, "description": "",
                                          "reason": "browser test", "vat_code": 4})
        assert created.status_code in (200, 202), created.text
        await wait_until(lambda: fetch_one(admin_database, "SELECT 1 FROM read.plans WHERE plan_id = %s", plan_id),
                         timeout=30, message="the plan in read.plans")
        granted = await client.post("/v1/admin/subscriptions/grant",
                                    headers={**operator_token("setup"), "Idempotency-Key": user_id, "Prefer": "wait=10"},
                                    json={"user_id": user_id, "plan_id": plan_id, "email": f"{user_id}@example.com",
                                          "locale": "ru", "reason": "browser test"})
        assert granted.status_code in (200, 202), granted.text
    row = await wait_until(
        lambda: fetch_one(admin_database, "SELECT subscription_id, period_end FROM read.subscriptions "
                                          "WHERE user_id = %s AND status = 'active'", user_id),
        timeout=30, message="the granted subscription in read.subscriptions")
    subscription_id, old_end = row
    expected_end = (old_end + timedelta(days=30)).astimezone(ZoneInfo(ADMIN_TZ)).strftime("%Y-%m-%d %H:%M %Z")

    # ---- the operator who logs in (created with the README's command)
    username, password = f"op-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    created_user = ManagedProcess(
        "admin-e2e-create-operator",
        [sys.executable, "-m", "admin", "manage", "create_operator", username, "--password-env", "OPERATOR_PW"],
        env={**pipeline["env"], "OPERATOR_PW": password},
    ).start()
    assert created_user.proc is not None and created_user.proc.wait(60) == 0, created_user.tail()

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1600})
            page.set_default_timeout(20_000)
            # log in
            await page.goto(f"{admin_url}/admin/")
            await page.fill("#id_username", username)
            await page.fill("#id_password", password)
            await page.click("input[type=submit]")
            await page.wait_for_selector("text=Subscriptions")

            # search the subscription by its user id
            await page.goto(f"{admin_url}/admin/billing/subscription/")
            await page.fill("#searchbar", user_id)
            await page.press("#searchbar", "Enter")
            await page.wait_for_selector(f"#result_list >> text={str(subscription_id)[:8]}")
            await page.click(f"#result_list a:has-text('{str(subscription_id)[:8]}')")
            await page.wait_for_selector(".billing-period-end")
            assert (await page.inner_text(".billing-period-end")).strip() != expected_end

            # extend it by 30 days
            await page.click("#act-extend")
            await page.fill("#id_days", "30")
            await page.fill("#id_reason", "browser test: outage compensation")
            await page.click("#submit-command")
            outcome = page.locator("#command-outcome")
            await outcome.wait_for()
            status = await outcome.get_attribute("data-status")
            assert status in ("succeeded", "accepted", "processing"), await outcome.inner_text()

            # back on the subscription page, the new end date appears once the projector caught up
            sub_url = f"{admin_url}/admin/billing/subscription/{subscription_id}/change/"

            async def shows_new_end() -> bool:
                await page.goto(sub_url)
                return (await page.inner_text(".billing-period-end")).strip() == expected_end

            await wait_until(shows_new_end, timeout=30, interval=0.5, message=f"the page shows {expected_end}")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)

            # and the account timeline shows who did it and why
            await page.goto(f"{admin_url}/admin/billing/account/{user_id}/timeline/")
            timeline = await page.inner_text("#timeline")
            assert "SubscriptionAdjusted" in timeline
            assert f"operator: {username}" in timeline
            assert "browser test: outage compensation" in timeline

            # a command the processor rejects shows its reason: a second grant of the same plan
            await page.goto(f"{admin_url}/admin/billing/account/{user_id}/change/")
            await page.click("#act-grant")
            assert await page.input_value("#id_user_id") == user_id  # prefilled from the account
            await page.select_option("#id_plan_id", plan_id)
            await page.fill("#id_reason", "browser test: grant twice")
            await page.click("#submit-command")
            await outcome.wait_for()
            assert await outcome.get_attribute("data-status") == "rejected", await outcome.inner_text()
            assert "already has an active" in await page.inner_text("#command-reason")

            # the plan's receipt settings, and the Revenue page with its filters and CSV download
            await page.goto(f"{admin_url}/admin/billing/plan/{plan_id}/change/")
            assert "4 — VAT 20%" in await page.inner_text("#content-main")
            await page.goto(f"{admin_url}/admin/")
            await page.click("a[href='/admin/billing/revenuemonth/']")
            await page.select_option("#revenue-plan", plan_id)
            await page.click("#revenue-filters input[type=submit]")
            await page.wait_for_url(f"**plan={plan_id}**")
            assert "No revenue yet" in await page.inner_text("#revenue")  # a granted subscription is not revenue
            csv = await page.request.get(await page.locator("#revenue-csv").evaluate("a => a.href"))
            assert csv.ok and (await csv.text()).startswith("month,plan_id,currency,mrr,")
        finally:
            await browser.close()

    new_end = fetch_one(admin_database, "SELECT period_end FROM read.subscriptions WHERE subscription_id = %s",
                        subscription_id)[0]
    assert new_end == old_end + timedelta(days=30)
    assert isinstance(new_end, datetime)


async def test_operator_resolves_a_reconciliation_difference(pipeline, admin_database: Settings, yookassa_sandbox: Any) -> None:
    """A run finds YooKassa's payment that names none of ours; the operator marks it resolved with a reason."""
    from datetime import UTC

    from playwright.async_api import async_playwright

    from payment_processor.bootstrap import reconcile_once
    from payment_processor.config import ProcessorServiceSettings, ProcessorSettings

    admin_url, env = pipeline["admin_url"], pipeline["env"]
    since = datetime.now(UTC) - timedelta(seconds=2)
    stranger = await yookassa_sandbox.adashboard_payment("77.00", {"order": f"elsewhere-{uuid.uuid4().hex[:6]}"})
    service = ProcessorServiceSettings(
        database_url=env["DATABASE_URL"], kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
        commands_topic=env["COMMANDS_TOPIC"], yookassa_api_url=env["YOOKASSA_API_URL"],
    )
    summary = await reconcile_once(service, ProcessorSettings(), since, datetime.now(UTC) + timedelta(seconds=2))
    [found] = [d for d in summary["differences"] if d["provider_id"] == stranger["id"]]
    assert (found["kind"], found["status"]) == ("unknown_to_us", "open")

    username, password = f"op-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    created_user = ManagedProcess(
        "admin-e2e-create-operator-2",
        [sys.executable, "-m", "admin", "manage", "create_operator", username, "--password-env", "OPERATOR_PW"],
        env={**env, "OPERATOR_PW": password},
    ).start()
    assert created_user.proc is not None and created_user.proc.wait(60) == 0, created_user.tail()

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1200})
            page.set_default_timeout(20_000)
            await page.goto(f"{admin_url}/admin/")
            await page.fill("#id_username", username)
            await page.fill("#id_password", password)
            await page.click("input[type=submit]")
            await page.wait_for_selector("text=Reconciliation differences")

            # the run, and its differences filtered by kind and status
            await page.goto(f"{admin_url}/admin/billing/reconciliationrun/")
            assert summary["run"]["run_id"][:8] in await page.inner_text("#result_list")
            await page.goto(f"{admin_url}/admin/billing/reconciliationdifference/?kind=unknown_to_us&status=open")
            await page.fill("#searchbar", stranger["id"])
            await page.press("#searchbar", "Enter")
            row = page.locator("#result_list tbody tr", has_text=stranger["id"])
            await row.locator("a").first.click()
            await page.wait_for_selector("#act-resolve")
            assert "names none of ours" in await page.inner_text("#content-main")

            await page.click("#act-resolve")
            await page.fill("#id_resolution", "browser test: a payment of another shop")
            await page.click("#submit-resolve")
            await page.wait_for_selector("text=browser test: a payment of another shop")
            assert await page.locator("#act-resolve").count() == 0  # resolved: nothing left to do
            await page.screenshot(path=str(SCREENSHOT.with_name("admin-reconciliation.png")), full_page=True)
        finally:
            await browser.close()

    row = fetch_one(admin_database, "SELECT status, resolved_by, resolution FROM processor.reconciliation_differences "
                                    "WHERE difference_id = %s", uuid.UUID(found["difference_id"]))
    assert row == ("resolved", username, "browser test: a payment of another shop")
