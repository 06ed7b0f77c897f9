"""Development stack tooling: starts the real Kafka broker, PostgreSQL and the services locally.

It exists so that a fresh machine without Docker gets the whole product running with one command
(`make run`, `make up`, `make test`). Only tooling, Makefile and tests import it; production code
never does.
"""
