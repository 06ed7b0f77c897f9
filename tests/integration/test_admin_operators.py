"""`create_operator` applies the operator-name rule the command API applies to `X-Operator`.

A name the API would refuse must never become an admin user (every action of it would fail); a
Cyrillic name or `anna+ops` must. Django on a fresh migrated database (tests/fixtures/admin.py).
"""

from __future__ import annotations

import os
import uuid

import pytest


def _create(name: str, *extra: str) -> str:
    """Run `manage create_operator NAME --password-env VAR` in-process; returns its output."""
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_operator", name, "--password-env", "TEST_OPERATOR_PASSWORD", *extra, stdout=out)
    return out.getvalue()


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(os.environ, "TEST_OPERATOR_PASSWORD", f"long-and-random-{uuid.uuid4().hex}")


@pytest.mark.parametrize("name, reason", [
    ("anna smith", "no spaces"), ("anna/ops", "letters, digits"), ("x" * 151, "at most 150"), ("", "cannot be empty"),
])
async def test_a_name_the_api_would_refuse_is_refused(admin_site, name: str, reason: str) -> None:
    from django.contrib.auth.models import User
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=reason):
        await admin_site.run(_create, name)
    assert not await admin_site.run(lambda: User.objects.filter(username=name).exists())


@pytest.mark.parametrize("name", ["анна", "anna+ops"])
async def test_cyrillic_and_plus_names_become_operators(admin_site, name: str) -> None:
    from django.contrib.auth.models import User

    output = await admin_site.run(_create, name)
    assert f"{name}: staff user in billing-operators" in output
    groups = await admin_site.run(lambda: list(User.objects.get(username=name).groups.values_list("name", flat=True)))
    assert groups == ["billing-operators"]
