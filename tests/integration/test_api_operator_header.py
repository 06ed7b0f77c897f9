"""`X-Operator` names any operator the admin can hold: Cyrillic names, `+`, `@` (schemas/operators.py).

Headers are latin-1 on the wire, so a name that is not ASCII travels percent-encoded as UTF-8; the
command's actor is the decoded name. Real API app, Kafka and PostgreSQL.
"""

from __future__ import annotations

import pytest

from schemas.operators import encode_operator_header
from tests.fixtures.command_api import new_user, published_commands


@pytest.mark.parametrize("operator", ["анна", "anna+ops", "maria@cinema.ru"])
async def test_a_service_token_acts_for_an_operator_named_like_a_django_user(api, seed, settings, operator):
    user, plan = new_user(), await seed.plan()
    sub = await seed.subscription(user, plan)
    headers = {**api.command("admin-app", role="service", operators=[operator]), "X-Operator": encode_operator_header(operator)}
    response = await api.client.post(f"/v1/admin/subscriptions/{sub['subscription_id']}/auto-renew",
                                     json={"enabled": False, "reason": "asked by phone"}, headers=headers)
    assert response.status_code == 202, response.text
    command_id = response.json()["command_id"]
    [(_, envelope, _)] = await published_commands(settings, api.topic, lambda e: e["id"] == command_id)
    assert envelope["metadata"]["actor"] == {"kind": "admin", "id": operator}


@pytest.mark.parametrize("value, reason", [
    (b"maria smith", "no spaces"),
    ("анна".encode(), "must be ASCII"),  # raw UTF-8 bytes instead of %XX
    (b"%FF%FE", "not UTF-8"),
    (b"x" * 151, "at most 150"),
])
async def test_an_x_operator_naming_nobody_valid_is_a_problem_with_a_reason(api, seed, value, reason):
    user, plan = new_user(), await seed.plan()
    sub = await seed.subscription(user, plan)
    headers = {**api.command("admin-app", role="service"), "X-Operator": value}
    response = await api.client.post(f"/v1/admin/subscriptions/{sub['subscription_id']}/auto-renew",
                                     json={"enabled": True, "reason": "x"}, headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("/invalid-operator") and reason in response.json()["detail"]
