"""The command API's I/O: the read models, the Idempotency-Key store, command intake to Kafka,
long-poll watchers and the identity provider's signing keys (JWKS)."""
