"""The notifier: tells users by email what happened to their money, once, in their language.

It consumes `billing.events` in its own consumer group, turns the events a user must hear about
into emails (Jinja2 templates, Russian or English) and sends them through Mailgun. PostgreSQL
records each event's email around the send, so a redelivered event is not emailed again and a
crash can at worst repeat one message with the same Message-Id (docs/decisions/0070).
"""
