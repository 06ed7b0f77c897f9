"""Where the dev stack keeps its state: everything lives under the git-ignored `.stack/` and `.kafka/`."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACK_DIR = Path(os.environ.get("BILLING_STACK_DIR", ROOT / ".stack"))
ENV_FILE = STACK_DIR / "env"
LOGS_DIR = STACK_DIR / "logs"
PIDS_DIR = STACK_DIR / "pids"
KAFKA_HOME = STACK_DIR / "kafka"
PG_DATA = STACK_DIR / "pg"
KAFKA_LIBS = ROOT / ".kafka" / "libs"
POM = ROOT / "pom.xml"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
