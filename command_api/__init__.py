"""The command API: how users, operators and YooKassa reach the billing system.

It authenticates callers, turns each state-changing request into exactly one command on Kafka
(Idempotency-Key with Stripe's semantics, command ids derived from the key), answers queries from
the projector's read models and takes YooKassa's notifications. It never changes billing state
itself: the payment processor decides, the projector records, the API reports.

Layout: `config.py` (its settings), `bootstrap.py` (the composition root: reads the settings and
builds every adapter), `domain/` (pure rules), `adapters/` (PostgreSQL, Kafka, JWKS),
`entrypoints/` (the HTTP app and the `billing token` CLI); `python -m command_api` serves it.
"""
