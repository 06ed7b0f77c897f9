"""Fault rules: which request (or notification) misbehaves, how, and how often.

A rule names a target pattern (`"POST /v3/payments"`, `"GET /v3/payments/*"`,
`"NOTIFY payment.succeeded"`; shell-style `*` wildcards), a mode, and how often it fires:
`probability` (0..1) and/or `count` (fire on the next N matching requests, then vanish), after
letting `skip` matching requests through. `metadata` narrows a rule to requests whose object
carries those metadata values, so tests sharing one emulator do not trip over each other's faults.

Rules live in memory: the admin API replaces or extends them, an env variable seeds them at start.
"""

from __future__ import annotations

import fnmatch
import json
import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class FaultRule(BaseModel):
    """One fault rule; parameters that do not apply to its mode are ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    endpoint: str = "*"
    mode: str
    probability: float = Field(1.0, ge=0.0, le=1.0)
    count: int | None = Field(None, ge=1, description="fire on the next N matching requests only")
    skip: int = Field(0, ge=0, description="let this many matching requests through first")
    metadata: dict[str, str] = Field(default_factory=dict)
    latency_ms: int = Field(0, ge=0, alias="latency_ms")
    hold_ms: int = Field(30_000, ge=0)
    times: int = Field(2, ge=2, le=20)
    window_ms: int = Field(1000, ge=0)
    retry_after_ms: int = Field(1000, ge=0)
    reason: str | None = None
    pending_ms: int = Field(0, ge=0)
    hits: int = 0

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict) and "delay_ms" in data:
            data = dict(data)
            data.setdefault("latency_ms", data.pop("delay_ms"))
        return data

    @field_validator("metadata", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value

    @field_validator("endpoint")
    @classmethod
    def _normalise_endpoint(cls, value: str) -> str:
        value = " ".join(value.split())
        if value.startswith("/"):
            value = "* " + value
        return value

    def targets(self, target: str) -> bool:
        return fnmatch.fnmatchcase(target, self.endpoint)


class FaultBook:
    """The active rules of one emulator, with the modes it understands."""

    def __init__(self, modes: Mapping[str, str], stackable: Iterable[str] = ()) -> None:
        # modes: accepted name (or alias) -> canonical mode name
        self.modes = dict(modes)
        self.stackable = set(stackable)
        self.rules: list[FaultRule] = []
        self._skipped: dict[str, int] = {}

    def parse(self, raw: Any) -> list[FaultRule]:
        """Validate a JSON rule or list of rules; ValueError with a readable message if bad."""
        items = raw if isinstance(raw, list) else [raw]
        rules = []
        for item in items:
            try:
                rule = FaultRule.model_validate(item)
            except ValidationError as exc:
                raise ValueError(str(exc)) from None
            canonical = self.modes.get(rule.mode)
            if canonical is None:
                raise ValueError(f"unknown fault mode {rule.mode!r}; known: {sorted(set(self.modes.values()))}")
            rule.mode = canonical
            rule.hits = 0
            rules.append(rule)
        return rules

    def parse_env(self, text: str | None) -> list[FaultRule]:
        if not text or not text.strip():
            return []
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"fault rules are not valid JSON: {exc}") from None
        return self.parse(raw)

    def replace(self, rules: list[FaultRule]) -> None:
        self.rules = list(rules)
        self._skipped.clear()

    def add(self, rules: list[FaultRule]) -> None:
        self.rules.extend(rules)

    def remove(self, rule_id: str) -> bool:
        before = len(self.rules)
        self.rules = [r for r in self.rules if r.id != rule_id]
        return len(self.rules) != before

    def clear(self) -> None:
        self.replace([])

    def snapshot(self) -> list[dict[str, Any]]:
        return [r.model_dump() for r in self.rules]

    def pick(
        self,
        target: str,
        metadata: Callable[[], Mapping[str, Any]] | None = None,
        only: Iterable[str] | None = None,
    ) -> list[FaultRule]:
        """Rules that fire for this request: every stackable one plus at most one other.

        `only` limits the choice to some modes (API faults vs notification faults). Firing
        consumes a rule's `count`; a rule whose count reaches zero is removed.
        """
        allowed = set(only) if only is not None else None
        fired: list[FaultRule] = []
        have_outcome = False
        subject: Mapping[str, Any] | None = None
        for rule in list(self.rules):
            if not rule.targets(target) or (allowed is not None and rule.mode not in allowed):
                continue
            is_stackable = rule.mode in self.stackable
            if not is_stackable and have_outcome:
                continue
            if rule.metadata:
                if subject is None:
                    subject = metadata() if metadata else {}
                if any(str(subject.get(k)) != v for k, v in rule.metadata.items()):
                    continue
            skipped = self._skipped.get(rule.id, 0)
            if skipped < rule.skip:
                self._skipped[rule.id] = skipped + 1
                continue
            if rule.probability < 1.0 and random.random() >= rule.probability:
                continue
            rule.hits += 1
            if rule.count is not None:
                rule.count -= 1
                if rule.count <= 0:
                    self.remove(rule.id)
            fired.append(rule)
            if not is_stackable:
                have_outcome = True
        return fired
