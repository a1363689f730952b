"""Waivers: the engine's view of flake policy. Policy (a quarantine file, a
grace period for new tests) decides; the engine only applies the answer.

``skip``: the test is not run; its result is a skip with the reason.
``warn``: the test runs and every attempt is recorded, but a failure or error
is reported as ``flaky`` with the reason, so it neither fails the run nor
blocks the gate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Waiver:
    mode: Literal["warn", "skip"]
    reason: str


# (test id, testbed) -> the waiver in force, if any
WaiverFn = Callable[[str, str], Waiver | None]
