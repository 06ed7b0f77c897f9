"""A local emulator of YooKassa API v3 (payments, refunds, saved cards, notifications).

Run it with `python -m sandbox.yookassa` (127.0.0.1:8010 by default); see `sandbox/README.md`.
"""
