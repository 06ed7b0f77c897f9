"""Local emulators of the external providers (YooKassa, Mailgun).

No machine here reaches the internet, and the product's promises ("never charge twice", "every
email once") can only be proven against providers that misbehave on demand. The emulators speak
the providers' real HTTP APIs, keep their state in SQLite and inject faults through a small admin
API under `/sandbox/`. Production code never imports this package.
"""
