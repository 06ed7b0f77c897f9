"""`python -m payment_processor.scheduler run|rebuild`: the renewal scheduler as its own command.

`run` runs the scheduler alone (it also runs inside `python -m payment_processor` unless
`PROCESSOR_SCHEDULER_ENABLED=false`); `rebuild` fills `processor.schedule` from the event store.
Both are composed in `payment_processor.bootstrap`; the scheduler itself is
`payment_processor/entrypoints/scheduler.py`.
"""

from __future__ import annotations

import argparse
import asyncio

from infra.logging import configure_logging, get_logger
from infra.settings import Settings
from payment_processor.bootstrap import rebuild_schedule, run_scheduler
from payment_processor.config import ProcessorSettings

log = get_logger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m payment_processor.scheduler", description="The scheduler: subscriptions that continue by themselves and end cleanly."
    )
    parser.add_argument("mode", choices=["run", "rebuild"], help="run: the scheduler alone; rebuild: fill processor.schedule from the event store")
    args = parser.parse_args(argv)
    configure_logging("payment-processor-scheduler")
    if args.mode == "rebuild":
        written = asyncio.run(rebuild_schedule(Settings()))
        log.info("schedule_rebuilt", rows=written)
        print(f"processor.schedule: {written} rows written")
    else:
        asyncio.run(run_scheduler(Settings(), ProcessorSettings()))


if __name__ == "__main__":
    main()
