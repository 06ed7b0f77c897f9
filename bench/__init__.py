"""Benchmarks: each module runs with `python -m bench.<name>` and ends with one JSON line of results."""
