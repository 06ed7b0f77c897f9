"""Entry point: `python -m devstack kafka|pg start|stop|status`, `up`, `down`, `run`, `env`."""

from devstack.cli import app

app(prog_name="python -m devstack")
