"""A part of a gate besides its tests (vulnerabilities, compliance): whether it holds, why in one
line, and the details."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GateSection:
    name: str
    holds: bool
    summary: str
    lines: list[str] = field(default_factory=list)
