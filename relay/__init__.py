"""The outbox relay: publishes committed events to `billing.events` in stream order, never skipping one.

A deployed process like the other services (`python -m relay`); see `relay/outbox.py` for why it
never skips an event and keeps each stream's order.
"""
