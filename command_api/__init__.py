"""The command API: how users, operators and YooKassa reach the billing system.

It authenticates callers, turns each state-changing request into exactly one command on Kafka
(Idempotency-Key with Stripe's semantics, command ids derived from the key), answers queries from
the projector's read models and takes YooKassa's notifications. It never changes billing state
itself: the payment processor decides, the projector records, the API reports.
"""
