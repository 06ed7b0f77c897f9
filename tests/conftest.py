"""Root conftest: loads every `tests/fixtures/*.py` as a pytest plugin.

Engineers add fixtures by adding a module there; nobody has to edit this file (and fight over it).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # so `tests.fixtures.*` and `tests.support.*` import by full name

pytest_plugins = sorted(
    f"tests.fixtures.{path.stem}"
    for path in (ROOT / "tests" / "fixtures").glob("*.py")
    if not path.name.startswith("_")
)
