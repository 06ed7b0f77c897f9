"""Upcasters: turn a payload stored under an old schema_version into the current shape.

The event log is append-only and kept forever, so old payloads are never rewritten; they are
lifted on read, one version step at a time. Register a step with `@upcaster("Type", from_version)`.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    def register(fn: Upcaster) -> Upcaster:
        _UPCASTERS[(type_name, from_version)] = fn
        return fn

    return register


def upcast(type_name: str, version: int, target: int, data: dict[str, Any]) -> dict[str, Any]:
    """Apply every step from `version` to `target`; a missing step is an error, not a guess."""
    if version > target:
        raise ValueError(f"{type_name} v{version} is newer than this code knows (v{target})")
    while version < target:
        step = _UPCASTERS.get((type_name, version))
        if step is None:
            raise ValueError(f"no upcaster for {type_name} from v{version}")
        try:
            data = step(dict(data))
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise ValueError(f"cannot upcast {type_name} from v{version}: {exc!r}") from exc
        version += 1
    return data


@upcaster("PlanCreated", 1)
def _plan_created_price_as_money(data: dict[str, Any]) -> dict[str, Any]:
    """v1 stored the price as integer kopecks plus a currency; v2 uses Money."""
    kopecks = int(data.pop("price_kopecks"))
    currency = data.pop("currency", "RUB")
    data["price"] = {"amount": str((Decimal(kopecks) / 100).quantize(Decimal("0.01"))), "currency": currency}
    return data
