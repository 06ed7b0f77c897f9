"""`python -m payment_processor`: the consumer of billing.commands and the janitor, in one process.

It runs on uvloop (as the API does under uvicorn): the processor is a busy asyncio program —
dozens of database and Kafka round trips in flight — and the event loop's own work was a fifth
of its CPU on the standard loop (docs/decisions/0049).

`PROCESSOR_PROFILE_TO=<file>` (benchmarks only, see bench/processor.py) runs the process under
cProfile in CPU time from the moment it is built (start-up — migrations, imports — is left out):
the event loop's thread AND every worker thread (the YooKassa SDK calls run in a thread pool,
which a plain `cProfile.run` would miss); the merged pstats go to `<file>` when the process stops
cleanly (SIGTERM).
"""

from __future__ import annotations

import os

import uvloop

from infra.logging import configure_logging
from payment_processor.bootstrap import build, run
from payment_processor.config import ProcessorServiceSettings, ProcessorSettings


def main() -> None:
    configure_logging("payment-processor")
    profile_to = os.environ.get("PROCESSOR_PROFILE_TO")
    if profile_to:
        _run_profiled(profile_to)
    else:
        uvloop.run(run(ProcessorServiceSettings(), ProcessorSettings()))


def _run_profiled(path: str) -> None:
    """Every thread gets its own profiler timed by `time.thread_time`, so the merged profile adds
    up to the process's CPU time instead of counting one thread's work in another's functions."""
    import cProfile
    import pstats
    import threading
    import time

    from infra.kafka import install_signal_handlers

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_thread_profile(*_: object) -> None:
        profile = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(profile)
        profile.enable()  # replaces this hook for the rest of the thread's life

    main_profile = cProfile.Profile(time.thread_time)

    async def profiled() -> None:
        processor = await build(ProcessorServiceSettings(), ProcessorSettings())
        install_signal_handlers(*processor.loops, extra=processor.stop)
        threading.setprofile(start_thread_profile)
        main_profile.enable()
        await processor.run()

    try:
        uvloop.run(profiled())
    finally:
        main_profile.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
        stats = pstats.Stats(main_profile)
        with lock:
            for profile in profiles:
                try:
                    stats.add(profile)
                except (TypeError, ValueError):  # a thread that never ran a profiled call
                    continue
        stats.dump_stats(path)


if __name__ == "__main__":
    main()
