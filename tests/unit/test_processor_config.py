"""The janitor's schedule, the processor's env settings and the test-only crash hook (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from payment_processor.config import ProcessorSettings
from payment_processor.handlers import CrashPoints

T0 = datetime(2026, 5, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "checks_done, now, expected",
    [
        (0, T0, T0 + timedelta(seconds=30)),  # the first check: 30 s after the intent
        (1, T0 + timedelta(seconds=30), T0 + timedelta(seconds=150)),  # then 2 min later
        (2, T0 + timedelta(seconds=150), T0 + timedelta(seconds=750)),  # 10 min
        (3, T0 + timedelta(seconds=750), T0 + timedelta(seconds=4350)),  # 1 h
        (4, T0 + timedelta(hours=2), T0 + timedelta(hours=3)),  # then hourly ...
        (20, T0 + timedelta(hours=23), T0 + timedelta(hours=24)),
        (25, T0 + timedelta(hours=24, minutes=1), T0 + timedelta(hours=48, minutes=1)),  # ... then daily
    ],
)
def test_janitor_schedule(checks_done: int, now: datetime, expected: datetime) -> None:
    assert ProcessorSettings().next_check_at(T0, checks_done, now) == expected


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_JANITOR_SCHEDULE_S", "1, 1,2.5")
    monkeypatch.setenv("PROCESSOR_DUNNING_RETRY_DAYS", "2,4")
    monkeypatch.setenv("PROCESSOR_CONSUMERS", "3")
    config = ProcessorSettings(_env_file=None)
    assert config.janitor_schedule_s == [1.0, 1.0, 2.5]
    assert config.dunning_retry_days == [2.0, 4.0]
    assert config.consumers == 3


def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_JANITOR_SCHEDULE_S", "soon")
    with pytest.raises(ValueError):
        ProcessorSettings(_env_file=None)


class Fired(Exception):
    pass


def _fire(point: str) -> None:
    raise Fired(point)


def test_crash_points_fire_only_where_asked_and_once_with_a_file(tmp_path) -> None:
    nothing = CrashPoints([], action=_fire)
    nothing.reached("before_create_payment")  # inert by default

    once = tmp_path / "crashed"
    points = CrashPoints(["after_checkout_started"], once_file=str(once), action=_fire)
    points.reached("after_create_payment")  # another point: nothing
    with pytest.raises(Fired, match="before_create_payment"):
        points.reached("before_create_payment")  # the alias maps to the step's point
    assert once.read_text() == "before_create_payment"
    points.reached("before_create_payment")  # once: the restarted process runs on
