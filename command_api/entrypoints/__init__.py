"""How the command API is reached: the FastAPI app, its routes, middleware and dependencies, and
the `billing token` CLI. `python -m command_api` (`command_api/__main__.py`) serves the app."""
