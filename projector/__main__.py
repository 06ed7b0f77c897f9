"""`python -m projector`: consume `billing.events` into the read models until SIGTERM."""

from __future__ import annotations

import asyncio

from eventstore.logging import configure_logging
from projector.consumer import ProjectorSettings, run


def main() -> None:
    configure_logging("projector")
    asyncio.run(run(ProjectorSettings()))


if __name__ == "__main__":
    main()
