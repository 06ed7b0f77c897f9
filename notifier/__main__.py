"""`python -m notifier`: the notifier process (see notifier/bootstrap.py)."""

from __future__ import annotations

import uvloop

from infra.logging import configure_logging

from notifier.bootstrap import run
from notifier.config import NotifierServiceSettings, NotifierSettings


def main() -> None:
    configure_logging("notifier")
    uvloop.run(run(NotifierServiceSettings(), NotifierSettings()))  # a busy small-message loop: uvloop's C loop is cheaper


if __name__ == "__main__":
    main()
