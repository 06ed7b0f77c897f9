"""Pieces both emulators share: SQLite access, fault rules, raw-connection tricks, logging."""
