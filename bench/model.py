"""`python -m bench.model --examples N`: a long run of the account aggregate's model-based test.

`make test` runs a budget of about a minute (tests/unit/test_account_model.py); this runs as many
examples as asked for, against the same machine (tests/support/account_model.py): every command
a user, an operator, the scheduler, the janitor and a notification can send, against a fake
YooKassa that succeeds, declines, stays pending, loses answers, fails with 5xx or 401, and
notifies late and more than once. The last line printed is JSON:
`{"examples": …, "steps": …, "violations": 0, "seconds": …}`; any violation is printed above it
with the shortest sequence of steps Hypothesis found, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback

import structlog
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model", description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="runs of the state machine (default 2000)")
    parser.add_argument("--steps", type=int, default=50, help="at most this many rules per run (default 50)")
    args = parser.parse_args(argv)

    # The gateway logs every refused credential as an error: thousands of them by design here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    from tests.support.account_model import AccountMachine

    config = settings(
        max_examples=args.examples,
        stateful_step_count=args.steps,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    started = time.monotonic()
    violations = 0
    try:
        run_state_machine_as_test(AccountMachine, settings=config)
    except BaseException as exc:  # noqa: BLE001 - every failure is a finding to print, not a crash
        if isinstance(exc, KeyboardInterrupt):
            raise
        violations = len(exc.exceptions) if isinstance(exc, BaseExceptionGroup) else 1
        traceback.print_exception(exc, file=sys.stderr)
    result = {
        "examples": AccountMachine.examples,
        "steps": AccountMachine.steps,
        "violations": violations,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result), flush=True)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
