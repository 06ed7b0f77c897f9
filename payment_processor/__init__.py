"""The payment processor: consumes commands, decides on the account aggregate, talks to YooKassa.

It is where the two promises are kept: never charge twice (intent recorded with a fixed
Idempotence-Key before every provider call; a retry reaches the same payment) and every
operation ends (each command ends in one terminal event; the janitor settles what the provider
left pending or unknown). `python -m payment_processor` runs the consumer and the janitor.
"""
