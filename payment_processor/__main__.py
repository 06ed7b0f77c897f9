"""`python -m payment_processor`: the consumer of billing.commands and the janitor, in one process."""

from __future__ import annotations

import asyncio

from eventstore.logging import configure_logging
from eventstore.settings import Settings
from payment_processor.bootstrap import run
from payment_processor.config import ProcessorSettings


def main() -> None:
    configure_logging("payment-processor")
    asyncio.run(run(Settings(), ProcessorSettings()))


if __name__ == "__main__":
    main()
