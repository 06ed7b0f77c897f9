"""The two promises under chaos, in `make test`: a shorter `python -m bench.chaos`.

Everything is real and private to this test: a fresh database, unique topics, a throw-away Kafka
broker (restarted once during the storm; the shared broker is never touched), both sandboxes and
every service as a process. Virtual users buy, pay, decline, abandon and cancel with refunds
through the API; others keep a renewing subscription while business time moves (the shiftable
clock), turning auto-renew off and on, canceling at period end, and operators extend, refund,
switch auto-renew and cancel, right as renewals start; a few buy with promo codes (a handful race
for a code's last uses), upgrade and downgrade between two plans of one product, or let their card
decline and pay the overdue period now. Meanwhile processors, the relay, the
projector and the notifier are SIGKILLed and restarted and YooKassa times out, answers 500
(applied or not), loses responses, duplicates and delays its notifications and sends old ones
again, late and twice. After the faults stop and the janitor settles everything, every count of
bench/chaos.py must be zero: no double charge (per purchase, and per renewal period), no renewal
kept after the customer said no, no command without a terminal status, no charge that bought
nothing, no refund above what was paid, no promo code used beyond its limit, every purchase charged
its price less its code's discount, read models equal to a replay, and emails exactly once per
event within the bound of docs/decisions/0070.
"""

from __future__ import annotations

import os
import random

import pytest

from bench.chaos import COUNT_KEYS, ChaosConfig, run_chaos, summary_json
from infra.settings import Settings

# ~3 minutes here, dominated by the broker's JVM start and restart; headroom for a busy machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


async def test_no_double_charge_and_every_command_ends_under_chaos(settings: Settings) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(2**31))
    cfg = ChaosConfig(duration=25.0, users=12, seed=seed, kill_every=(1.5, 4.0),
                      kafka_restart_at=(0.1, 0.2), after_broker_s=15.0, settle_timeout=90.0)
    report = await run_chaos(cfg, settings.database_url, log=lambda m: print(m, flush=True))
    print(summary_json(report))
    print({k: v for k, v in report["operations_by_kind"].items()}, report["facts"], flush=True)

    explain = (f"seed {seed} (rerun with CHAOS_SEED={seed}); {summary_json(report)}\n"
               + "\n".join(report["details"] + report["revive_failures"] + report["notes"])
               + f"\nlogs: {report['logs']}")
    assert report["settled"], f"not settled: {report['open_after_settle']}; {explain}"
    assert {k: report[k] for k in COUNT_KEYS} == dict.fromkeys(COUNT_KEYS, 0), explain
    # the run really was chaotic: users got through, processes died, the broker restarted, YooKassa lied
    assert report["operations_by_kind"].get("active_seen", 0) > 0, explain
    assert report["kills"] >= 3 and report["kafka_restarts"] == 1 and report["faults"] > 0, explain
    # ... and the renewal mix ran: time moved, renewals started, people said no, YooKassa repeated itself
    ops = report["operations_by_kind"]
    assert report["time_shifts"] > 0 and report["facts"]["renewals_started"] > 0, explain
    # Someone acted right after a move (a customer's auto-renew or cancel, an operator's extend, refund,
    # switch or cancel). Since pay-now, switching and promo flows took a fifth of the traffic, a 25 s
    # run's few renewing users can draw no "no" at all (seed 1053244269), so any action counts here;
    # what a "no" must lead to is the charges_after_decline count above, zero on every run.
    acted = ("auto_renew_off", "auto_renew_on", "cancel_at_period_end", "op_extend", "op_refund", "op_auto_renew", "op_cancel")
    assert sum(ops.get(kind, 0) for kind in acted) > 0, explain
    assert ops.get("late_notification", 0) + ops.get("duplicate_notification", 0) > 0, explain
