"""Export the JSON Schema of every payload and of the envelope into `schemas/json/`.

Other teams and languages read these files instead of the Python models; a test fails when a
model changed and the files were not regenerated (`python -m schemas.export`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schemas.envelope import PAYLOAD_TYPES, Envelope

JSON_DIR = Path(__file__).parent / "json"


def render_all() -> dict[str, str]:
    """File name → exported text, for every payload type and the envelope."""
    files: dict[str, str] = {}
    for name, cls in sorted(PAYLOAD_TYPES.items()):
        schema: dict[str, Any] = cls.model_json_schema(mode="serialization")
        schema["x-kind"] = cls.kind
        schema["x-schema-version"] = cls.schema_version
        files[f"{cls.kind}s/{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    envelope = Envelope.model_json_schema(mode="serialization")
    envelope["properties"]["type"]["enum"] = sorted(PAYLOAD_TYPES)
    files["Envelope.json"] = json.dumps(envelope, indent=2, sort_keys=True) + "\n"
    return files


def main() -> int:
    files = render_all()
    for rel, text in files.items():
        path = JSON_DIR / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for stale in JSON_DIR.rglob("*.json"):
        if str(stale.relative_to(JSON_DIR)) not in files:
            stale.unlink()
    print(f"wrote {len(files)} schemas to {JSON_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
