"""What runs: the live consumer (started by `python -m projector` through projector/bootstrap.py) and the `billing replay` CLI."""
