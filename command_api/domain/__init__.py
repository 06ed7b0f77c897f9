"""The command API's rules, pure (no database, broker or HTTP client): token claims and who may act,
the Idempotency-Key hash and command ids, problem documents, what a YooKassa notification says
and which client address to judge it by."""
