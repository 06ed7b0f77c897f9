"""`python -m relay`: the outbox relay process (configuration from the environment)."""

from __future__ import annotations

import argparse
import sys

import uvloop

from infra.logging import configure_logging
from relay.bootstrap import run_relay
from relay.config import RelaySettings
from relay.outbox import DEFAULT_BATCH_SIZE, DEFAULT_EVENTS_PARTITIONS


def main(argv: list[str] | None = None) -> int:
    """`python -m relay [--batch-size N] [--partitions N] [--name NAME]`: configuration from the environment."""
    parser = argparse.ArgumentParser(prog="python -m relay", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="outbox rows per batch")
    parser.add_argument(
        "--partitions", type=int, default=DEFAULT_EVENTS_PARTITIONS, help="partitions when the events topic is created"
    )
    parser.add_argument("--name", default="relay", help="instance name (logs, PostgreSQL application_name)")
    args = parser.parse_args(argv)
    configure_logging("relay")
    uvloop.run(run_relay(RelaySettings(), batch_size=args.batch_size, partitions=args.partitions, name=args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
