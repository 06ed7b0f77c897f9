"""The narrated demo `make run` plays once the stack is up: the product's story in one terminal.

It seeds the plan catalogue and a demo operator, prints every URL and a user token, then —
unless DEMO=0 — walks one customer through the whole life of a subscription over the real
HTTP APIs: buy, pay on the sandbox page, get the email, let ten days pass (the shared business
clock), upgrade to the yearly plan with the unused days as a credit, cancel with a prorated
refund, and print the account's event timeline; then a second customer's renewal declines and he
pays the overdue subscription now with a new card. It never
touches a table the services own; the timeline is read from the event store, read-only.

It stays alive afterwards (honcho stops the whole stack when any process exits).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from devstack import paths

API = os.environ.get("COMMAND_API_URL", "http://127.0.0.1:8000")
YOOKASSA = os.environ.get("SANDBOX_YOOKASSA_URL", "http://127.0.0.1:8010")
MAILGUN = os.environ.get("SANDBOX_MAILGUN_URL", "http://127.0.0.1:8020")
ADMIN = os.environ.get("ADMIN_URL", "http://127.0.0.1:8001")
PLANS = (
    {"plan_id": "monthly", "name": "Кино, месяц", "price": {"amount": "299.00", "currency": "RUB"}, "period_days": 30,
     "description": "Films and series in HD, 30 days", "product": "cinema"},
    {"plan_id": "yearly", "name": "Кино, год", "price": {"amount": "2990.00", "currency": "RUB"}, "period_days": 365,
     "description": "Films and series in HD, 365 days", "product": "cinema"},
)
"""One product: a customer holds one of its plans at a time and switches between them."""
DEMO_OPERATOR = "demo"
DEMO_OPERATOR_PASSWORD = os.environ.get("DEMO_OPERATOR_PASSWORD", "demo-operator")
SUCCESS_CARD = "5555555555554444"
NEW_CARD = "4111111111111111"

console = Console(highlight=False)


class DemoError(RuntimeError):
    pass


def _token(**claims: Any) -> str:
    from command_api.config import ApiSettings
    from infra.tokens import mint_token

    settings = ApiSettings()  # the API's JWT settings: the same secret and the same maximum lifetime
    return mint_token(settings.jwt_secret, ttl_s=settings.jwt_max_token_age_s, **claims)


def _wait(what: str, probe, timeout: float = 120.0, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise DemoError(f"timed out waiting for {what} (last answer: {last!r})")


def _until_subscription(client: httpx.Client, path: str, auth: dict[str, str], done, timeout: float = 60.0) -> Any:
    """Long-poll a subscription until `done(body)`: its ETag back in If-None-Match with `Prefer: wait`
    makes the API answer the moment the subscription changes — one request per change, no polling."""
    deadline = time.monotonic() + timeout
    etag, body = None, None
    while time.monotonic() < deadline:
        headers = {**auth, "If-None-Match": etag, "Prefer": "wait=10"} if etag else auth
        try:
            answer = client.get(path, headers=headers)
        except httpx.HTTPError:
            time.sleep(0.3)
            continue
        if answer.status_code == 200:
            body = answer.json()
            if done(body):
                return body
            etag = answer.headers.get("ETag")
        elif answer.status_code != 304:  # not projected yet (404), or the API restarting
            time.sleep(0.3)
    raise DemoError(f"timed out waiting for {path} (last answer: {body!r})")


def _json(answer: httpx.Response) -> Any:
    if answer.status_code >= 400:
        raise DemoError(f"{answer.request.method} {answer.request.url} → {answer.status_code}: {answer.text[:500]}")
    return answer.json()


def _inbox(email: str) -> list[dict[str, Any]]:
    return _json(httpx.get(f"{MAILGUN}/sandbox/messages", params={"to": email}, timeout=5))["items"]


def _ready(url: str) -> bool:
    return httpx.get(url, timeout=3).status_code == 200


def seed(client: httpx.Client, operator_token: str) -> None:
    """The plan catalogue; deterministic Idempotency-Keys make a second `make run` a no-op."""
    auth = {"Authorization": f"Bearer {operator_token}"}
    existing = {p["plan_id"] for p in _json(client.get("/v1/plans", headers=auth))["items"]}
    for plan in PLANS:
        if plan["plan_id"] in existing:
            continue
        answer = client.post(
            "/v1/admin/plans",
            json={**plan, "reason": "demo catalogue"},
            headers={**auth, "Idempotency-Key": f"seed-plan-{plan['plan_id']}",
                     "Prefer": "wait=10"},
        )
        if answer.status_code >= 400 and answer.status_code != 409:
            raise DemoError(f"could not create plan {plan['plan_id']}: {answer.status_code} {answer.text}")
    wanted = {p["plan_id"] for p in PLANS}
    _wait("the plan catalogue", lambda: {p["plan_id"] for p in _json(client.get("/v1/plans", headers=auth))["items"]} >= wanted)


def create_operator() -> None:
    env = {**os.environ, "DEMO_OPERATOR_PASSWORD": DEMO_OPERATOR_PASSWORD}
    result = subprocess.run(
        [sys.executable, "-m", "admin", "manage", "create_operator", DEMO_OPERATOR, "--email", "demo@billing.local",
         "--password-env", "DEMO_OPERATOR_PASSWORD", "--skip-validation"],
        env=env, cwd=paths.ROOT, capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0:
        raise DemoError(f"could not create the demo operator: {result.stderr[-2000:]}")


def _step(n: int, text: str) -> None:
    console.print(f"\n[bold cyan]{n}.[/] [bold]{text}[/]")


def _money(m: dict[str, str]) -> str:
    return f"{m['amount']} {m['currency']}"


def narrate(client: httpx.Client) -> None:
    user_id = f"demo-anna-{uuid.uuid4().hex[:6]}"
    email = f"{user_id}@example.com"
    auth = {"Authorization": f"Bearer {_token(user_id=user_id, email=email, locale='en')}"}

    _shift_days(None)  # a re-run starts the story on the system clock again
    _step(1, f"Anna ({email}) buys the monthly plan")
    answer = client.post("/v1/subscriptions", json={"plan_id": "monthly", "auto_renew": True},
                         headers={**auth, "Idempotency-Key": str(uuid.uuid4()), "Prefer": "wait=10"})
    body = answer.json()
    console.print(f"   POST /v1/subscriptions → {answer.status_code} {body.get('status')}")
    if body.get("status") != "succeeded":
        body = _wait("the checkout", lambda: (s := client.get(f"/v1/commands/{body['command_id']}", headers=auth).json())
                     .get("status") in ("succeeded", "rejected", "failed") and s, timeout=60)
    outcome = body["outcome"]
    subscription_id, url = outcome["subscription_id"], outcome["confirmation_url"]
    console.print(f"   confirmation URL: [link={url}]{url}[/link]")

    _step(2, f"She pays on the YooKassa sandbox page with the test card {SUCCESS_CARD}")
    paid = httpx.post(url, data={"card_number": SUCCESS_CARD, "action": "pay"}, timeout=10, follow_redirects=True)
    console.print(f"   payment page → {paid.status_code}")

    _step(3, "YooKassa notifies the webhook; the processor re-reads the payment; the subscription turns active")
    sub = _until_subscription(client, f"/v1/subscriptions/{subscription_id}", auth, lambda s: s["status"] == "active")
    console.print(f"   {sub['plan_name']}: [green]{sub['status']}[/] from {sub['period_start']} to {sub['period_end']}, "
                  f"paid {_money(sub['amount_paid'])} with {sub.get('payment_method_title') or 'a card'}")

    _step(4, "The email arrives (Mailgun sandbox inbox)")
    for message in _wait("the payment email", lambda: _inbox(email), timeout=60):
        console.print(f"   ✉  to {message.get('to')}: {message.get('subject')}")
    console.print(f"   inbox: {MAILGUN}/inbox")

    _step(5, "Ten days pass (business time moves for every service at once)")
    def quote() -> dict[str, Any]:
        return _json(client.get(f"/v1/subscriptions/{subscription_id}/refund-quote", headers=auth))

    before = quote()
    expected = min(before["days_used"] + 10, before["days_in_period"])  # a re-run may start with time already moved
    _shift_days(10)
    # Services refresh the shared offset in the background; wait until the API's clock shows it.
    now_quote = _wait("the API to see the moved clock", lambda: (q := quote())["days_used"] >= expected and q, timeout=30)
    console.print(f"   refund quote: {_money(now_quote['amount'])} — {now_quote['days_used']} of {now_quote['days_in_period']} days used "
                  "(every started 24-hour period since the payment counts)")

    _step(6, "Anna upgrades to the yearly plan: the unused days of her month are a credit, her saved card pays the rest")
    seen = len(_inbox(email))
    answer = client.post(f"/v1/subscriptions/{subscription_id}/switch", json={"plan_id": "yearly"},
                         headers={**auth, "Idempotency-Key": str(uuid.uuid4()), "Prefer": "wait=10"})
    console.print(f"   POST switch → {answer.status_code} {answer.json().get('status')}: {(answer.json().get('outcome') or {}).get('message')}")
    sub = _until_subscription(client, f"/v1/subscriptions/{subscription_id}", auth, lambda s: s["plan_id"] == "yearly")
    upgrade = next(p for p in sub["payments"] if p["purpose"] == "upgrade")
    credit = float(sub["price"]["amount"]) - float(upgrade["amount"]["amount"])
    console.print(f"   {sub['plan_name']}: [green]{sub['status']}[/] from {sub['period_start']} to {sub['period_end']}")
    console.print(f"   charged {_money(upgrade['amount'])} = {_money(sub['price'])} − credit {credit:.2f} {sub['price']['currency']} "
                  f"(= the refund quote above: the same day-counting)")
    for message in _wait("the upgrade email", lambda: len(m := _inbox(email)) > seen and m, timeout=60)[seen:]:
        console.print(f"   ✉  {message.get('subject')}")

    _step(7, "Anna cancels with a refund for the days she did not use")
    seen = len(_inbox(email))
    answer = client.post(f"/v1/subscriptions/{subscription_id}/cancel", json={"mode": "refund_now"},
                         headers={**auth, "Idempotency-Key": str(uuid.uuid4()), "Prefer": "wait=10"})
    console.print(f"   POST cancel → {answer.status_code} {answer.json().get('status')}")
    # The yearly period was paid by the upgrade charge and the credit carried from the monthly
    # payment, so its refund comes back from both payments (YooKassa refunds per payment).
    refunds = _wait("the refunds", lambda: (r := client.get("/v1/refunds", headers=auth).json()["items"])
                    and all(x["status"] == "succeeded" for x in r) and r, timeout=60)
    for refund in refunds:
        console.print(f"   refund [green]{refund['status']}[/]: {_money(refund['amount'])} ({refund.get('days_used')} days used)")
    for message in _wait("the refund emails", lambda: len(m := _inbox(email)) >= seen + 2 and m, timeout=60)[seen:]:
        console.print(f"   ✉  {message.get('subject')}")

    _step(8, f"The account's event timeline (eventstore.events, stream account-{user_id})")
    print_timeline(user_id)

    narrate_recovery(client)


def _saved_card(subscription_id: str) -> str:
    """The id of the card YooKassa saved when the subscription was paid (the sandbox's inspection API)."""
    payments = _json(httpx.get(f"{YOOKASSA}/sandbox/payments", params={"metadata.subscription_id": subscription_id,
                                                                        "status": "succeeded"}, timeout=5))["items"]
    saved = [p["payment_method"]["id"] for p in payments if (p.get("payment_method") or {}).get("saved")]
    if not saved:
        raise DemoError(f"no saved card for subscription {subscription_id}")
    return saved[0]


def _pay_page(url: str, card: str) -> int:
    """Pay on the sandbox's payment page as a person would (the form's fields)."""
    return httpx.post(url, data={"card_number": card, "action": "pay"}, timeout=10, follow_redirects=True).status_code


def narrate_recovery(client: httpx.Client) -> None:
    """Past-due recovery: a renewal declines, the customer pays now with a new card, active again."""
    user_id = f"demo-boris-{uuid.uuid4().hex[:6]}"
    email = f"{user_id}@example.com"
    auth = {"Authorization": f"Bearer {_token(user_id=user_id, email=email, locale='en')}"}

    _step(8, f"Boris ({email}) buys the monthly plan and pays; his card will decline at renewal")
    body = _json(client.post("/v1/subscriptions", json={"plan_id": "monthly", "auto_renew": True},
                             headers={**auth, "Idempotency-Key": str(uuid.uuid4()), "Prefer": "wait=10"}))
    if body.get("status") != "succeeded":
        body = _wait("the checkout", lambda: (s := client.get(f"/v1/commands/{body['command_id']}", headers=auth).json())
                     .get("status") in ("succeeded", "rejected", "failed") and s, timeout=60)
    subscription_id = body["outcome"]["subscription_id"]
    _pay_page(body["outcome"]["confirmation_url"], SUCCESS_CARD)
    path = f"/v1/subscriptions/{subscription_id}"
    sub = _until_subscription(client, path, auth, lambda s: s["status"] == "active")
    card = _saved_card(subscription_id)
    _json(httpx.post(f"{YOOKASSA}/sandbox/payment-methods/{card}/behaviour", json={"decline_reason": "insufficient_funds"}, timeout=5))
    console.print(f"   active until {sub['period_end']}; the sandbox now declines card {card} (insufficient funds)")

    _step(9, "Thirty days pass: the renewal charge is declined and the subscription is past due")
    _shift_days(29.6)  # inside the one-day renewal lead
    sub = _until_subscription(client, path, auth, lambda s: s["status"] == "past_due", timeout=90)
    console.print(f"   status [yellow]{sub['status']}[/] ({sub.get('status_reason')}); access is kept while dunning retries")
    for message in _wait("the renewal-failed email", lambda: [m for m in _inbox(email) if "renewal_failed" in m.get("tags", [])],
                         timeout=60):
        console.print(f"   ✉  {message.get('subject')} — it offers “Pay now”")

    _step(10, f"Boris pays now (POST {path}/pay) with another card, {NEW_CARD}")
    answer = client.post(f"{path}/pay", json={}, headers={**auth, "Idempotency-Key": str(uuid.uuid4()), "Prefer": "wait=10"})
    body = _json(answer)
    if body.get("status") != "succeeded":
        body = _wait("the payment page", lambda: (s := client.get(f"/v1/commands/{body['command_id']}", headers=auth).json())
                     .get("status") in ("succeeded", "rejected", "failed") and s, timeout=60)
    url = body["outcome"]["confirmation_url"]
    console.print(f"   POST pay → {answer.status_code}; payment page: [link={url}]{url}[/link]")
    console.print(f"   payment page → {_pay_page(url, NEW_CARD)}")
    sub = _until_subscription(client, path, auth, lambda s: s["status"] == "active", timeout=60)
    console.print(f"   [green]{sub['status']}[/] again, paid until {sub['period_end']} (from the old period end), "
                  f"renewals now charge {sub.get('payment_method_title') or 'the new card'}")
    for message in _wait("the payment email", lambda: [m for m in _inbox(email) if "recovery_succeeded" in m.get("tags", [])],
                         timeout=60):
        console.print(f"   ✉  {message.get('subject')}")


def _shift_days(days: float | None) -> None:
    """Move business time `days` forward (None: back to the system clock), and return once every
    service's clock shows it: each re-reads the shared offset every OFFSET_REFRESH_S. Without the
    wait, a command could reach the processor before its clock moved (the demo once refunded for
    1 day used while the API quoted 11)."""
    import asyncio

    from infra.clock import OFFSET_REFRESH_S, read_offset, shift_time
    from infra.db import create_engine
    from infra.settings import Settings

    async def run() -> timedelta:
        engine = create_engine(Settings(), pool_size=1)
        try:
            delta = -(await read_offset(engine)) if days is None else timedelta(days=days)
            return await shift_time(engine, delta)
        finally:
            await engine.dispose()

    offset = asyncio.run(run())
    time.sleep(2 * OFFSET_REFRESH_S)
    console.print(f"   business clock offset is now {offset}")


def print_timeline(user_id: str) -> None:
    import psycopg

    from infra.settings import Settings, plain_url

    with psycopg.connect(plain_url(Settings().database_url), connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT stream_version, occurred_at, type, metadata->'actor'->>'kind', metadata->'actor'->>'id', "
            "coalesce(data->>'reason', data->>'code', '') FROM eventstore.events WHERE stream_id = %s "
            "ORDER BY stream_version DESC",
            (f"account-{user_id}",),
        ).fetchall()
    table = Table("v", "occurred at (UTC)", "event", "actor", "reason")
    for version, at, kind, actor_kind, actor_id, reason in rows:
        table.add_row(str(version), at.strftime("%Y-%m-%d %H:%M:%S"), kind, f"{actor_kind}:{actor_id}", reason)
    console.print(table)


def main() -> int:
    narrated = os.environ.get("DEMO", "1") != "0"
    client = httpx.Client(base_url=API, timeout=15)
    try:
        _wait("the command API", lambda: _ready(f"{API}/readyz"), timeout=180)
        operator_token = _token(user_id="demo-seeder", role="operator")
        seed(client, operator_token)
        create_operator()
        console.rule("[bold]billing is running")
        console.print(f"API docs        {API}/docs")
        console.print(f"admin           {ADMIN}/admin/   (operator: {DEMO_OPERATOR} / {DEMO_OPERATOR_PASSWORD})")
        console.print(f"payment sandbox {YOOKASSA}/")
        console.print(f"mail inbox      {MAILGUN}/inbox")
        demo_user = "demo-user"
        console.print(f"demo token      (user {demo_user}) {_token(user_id=demo_user, email='demo-user@example.com', locale='en')}")
        console.print(f"try             curl -H 'Authorization: Bearer <token>' {API}/v1/plans")
        if narrated:
            console.rule("[bold]demo: one subscription's life")
            narrate(client)
        console.rule("the stack keeps running; Ctrl-C stops everything")
    except DemoError as exc:
        console.print(f"[red]demo stopped: {exc}[/] — the stack keeps running")
    finally:
        client.close()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
