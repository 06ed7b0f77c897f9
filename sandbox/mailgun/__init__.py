"""A local emulator of Mailgun's messages API with an inbox page and fault injection.

Run it with `python -m sandbox.mailgun` (127.0.0.1:8020 by default); see `sandbox/README.md`.
"""
