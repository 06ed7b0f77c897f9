"""`python -m projector`: consume `billing.events` into the read models until SIGTERM (see projector/bootstrap.py)."""

from __future__ import annotations

import uvloop

from infra.logging import configure_logging
from projector.bootstrap import run
from projector.config import ProjectorSettings


def main() -> None:
    configure_logging("projector")
    uvloop.run(run(ProjectorSettings()))  # a busy small-message loop: uvloop's C loop is cheaper


if __name__ == "__main__":
    main()
