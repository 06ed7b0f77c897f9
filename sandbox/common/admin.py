"""The `/sandbox/faults` admin routes, the same for every emulator."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from .faults import FaultBook


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def mount_fault_routes(app: FastAPI, book: FaultBook, log: Any) -> None:
    """GET/PUT/POST/DELETE `/sandbox/faults` and DELETE `/sandbox/faults/{id}`."""

    async def parse(request: Request) -> Any:
        return book.parse(orjson.loads(await request.body() or b"[]"))

    @app.get("/sandbox/faults", tags=["sandbox"])
    async def get_faults() -> Response:
        """Active fault rules with their remaining counts and hits."""
        return json_response(book.snapshot())

    @app.put("/sandbox/faults", tags=["sandbox"])
    async def put_faults(request: Request) -> Response:
        """Replace all fault rules with a JSON list (or one rule)."""
        try:
            rules = await parse(request)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return json_response({"error": str(exc)}, 400)
        book.replace(rules)
        log.info("faults_replaced", rules=book.snapshot())
        return json_response(book.snapshot())

    @app.post("/sandbox/faults", tags=["sandbox"])
    async def add_faults(request: Request) -> Response:
        """Add fault rules without touching the others; returns the added rules with their ids."""
        try:
            rules = await parse(request)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return json_response({"error": str(exc)}, 400)
        book.add(rules)
        log.info("faults_added", rules=[r.model_dump() for r in rules])
        return json_response([r.model_dump() for r in rules], 201)

    @app.delete("/sandbox/faults", tags=["sandbox"])
    async def clear_faults() -> Response:
        """Remove every fault rule."""
        book.clear()
        log.info("faults_cleared")
        return json_response([])

    @app.delete("/sandbox/faults/{rule_id}", tags=["sandbox"])
    async def delete_fault(rule_id: str) -> Response:
        """Remove one fault rule."""
        if not book.remove(rule_id):
            return json_response({"error": f"no fault rule {rule_id}"}, 404)
        return json_response(book.snapshot())
