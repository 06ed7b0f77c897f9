"""`python -m projector`: consume `billing.events` into the read models until SIGTERM."""

from __future__ import annotations

import uvloop

from infra.logging import configure_logging
from projector.consumer import ProjectorSettings, run


def main() -> None:
    configure_logging("projector")
    uvloop.run(run(ProjectorSettings()))  # a busy small-message loop: uvloop's C loop is cheaper


if __name__ == "__main__":
    main()
