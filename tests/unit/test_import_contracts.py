"""The architecture's import directions (.importlinter), checked on every `make test`.

Services never import each other, `schemas` imports nothing of ours, the shared library imports
no service, production code never imports the test and development tooling, and the domains stay
pure. A broken direction fails here with import-linter's report naming the offending import chain.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=240
    )


def test_every_import_contract_is_kept() -> None:
    result = _lint(ROOT / ".importlinter")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_broken_direction_is_reported(tmp_path: Path) -> None:
    """The checker really checks: the API does import the contracts, so forbidding it must fail."""
    config = tmp_path / "broken.ini"
    config.write_text(
        "[importlinter]\nroot_packages =\n    schemas\n    command_api\n\n"
        "[importlinter:contract:x]\nname = the API may not import schemas\ntype = forbidden\n"
        "source_modules =\n    command_api\nforbidden_modules =\n    schemas\n"
    )
    result = _lint(config)
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout
