"""The operators' Django admin: watch every subscription, adjust it only through commands.

It reads the projector's read models (schema `read`) and the event store (schema `eventstore`,
for the account timeline) and never writes either: every manual adjustment is posted to the
command API's operator endpoints, so the event log stays the one source of truth. Django's own
tables (users, groups, sessions, the admin log) live in their own schema `django`.
"""
