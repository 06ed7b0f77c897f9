"""The registry of local processes `make run` / `make up` start, with where each listens.

A service appears only once its module exists (checked with importlib at run time), so the
stack grows as the parts are written and nobody has to edit this file to "switch one on".
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from devstack import paths


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    port: int | None = None
    health_path: str | None = None
    args: tuple[str, ...] = ()
    show_path: str = ""  # what to open in a browser, printed by `make run` / `make up`

    @property
    def argv(self) -> list[str]:
        """Run with the project's venv interpreter (the one running devstack when there is no venv)."""
        import sys

        python = str(paths.VENV_PYTHON) if paths.VENV_PYTHON.exists() else sys.executable
        return [python, "-m", self.module, *self.args]

    @property
    def url(self) -> str | None:
        return f"http://127.0.0.1:{self.port}" if self.port else None

    @property
    def listen(self) -> str:
        return f"{self.url}{self.show_path}" if self.url else "(worker, no port)"

    @property
    def health_url(self) -> str | None:
        return f"{self.url}{self.health_path}" if self.port and self.health_path else None

    def available(self) -> bool:
        """True when `python -m <module>` would run: the module (or the package's __main__) exists."""
        try:
            spec = importlib.util.find_spec(self.module)
            if spec is None:
                return False
            if spec.submodule_search_locations is not None:  # a package: needs __main__
                return importlib.util.find_spec(f"{self.module}.__main__") is not None
            return True
        except (ImportError, ValueError):
            return False


# Order matters: sandboxes first (the processor and notifier call them), the API and admin last.
SERVICES: tuple[Service, ...] = (
    Service("yookassa-sandbox", "sandbox.yookassa", 8010, "/healthz", show_path="/"),
    Service("mailgun-sandbox", "sandbox.mailgun", 8020, "/healthz", show_path="/inbox"),
    Service("relay", "relay"),
    Service("processor", "payment_processor"),
    Service("projector", "projector"),
    Service("notifier", "notifier"),
    Service("api", "command_api", 8000, "/healthz", show_path="/docs"),
    Service("admin", "admin", 8001, "/healthz", show_path="/admin/"),
)


def available_services() -> list[Service]:
    return [s for s in SERVICES if s.available()]
