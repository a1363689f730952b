"""The machine's own complaints as records: what one is, its kinds, and how the catalog keeps them.
Light on purpose (no testbed, no test kind): the query commands read findings back through it."""

from __future__ import annotations

import json
from dataclasses import dataclass

OOPS, COREDUMP, FAILED_UNIT, DENIAL = "oops", "coredump", "failed-unit", "denial"
KINDS = (OOPS, COREDUMP, FAILED_UNIT, DENIAL)  # the words of a suite's ``checks: {fail_on: [...]}``


@dataclass(frozen=True)
class Finding:
    """One of the machine's own complaints in a test's window (``checks.complaints``): its kind
    (oops, coredump, failed-unit, denial) and what the machine said."""

    kind: str
    text: str


def encoded(found: tuple[Finding, ...] | list[Finding]) -> str | None:
    """Findings as the catalog keeps them (JSON; None: none)."""
    return json.dumps([{"kind": f.kind, "text": f.text} for f in found]) if found else None


def decoded(text: str | None) -> list[Finding]:
    """What :func:`encoded` wrote (a damaged value reads as no findings)."""
    try:
        items = json.loads(text) if text else []
    except ValueError:
        return []
    return [Finding(str(i.get("kind", "")), str(i.get("text", ""))) for i in items if isinstance(i, dict)] \
        if isinstance(items, list) else []


def reusable(findings: str | None, fail_on: frozenset[str]) -> bool:
    """Whether an earlier pass (its findings as the catalog keeps them) still counts for these bytes: the machine
    complained in it of nothing that now fails a test (a suite's ``fail_on``)."""
    return not any(f.kind in fail_on for f in decoded(findings))
