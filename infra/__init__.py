"""What every service runs on: settings, structured logs, Kafka, the database pools, the clock,
migrations, metrics and the operator's status queries. No business rules, no event store: the
store is `eventstore/`, the shared rules are `rules/`."""
