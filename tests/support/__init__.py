"""Shared helpers for tests: real processes and polling with deadlines."""
