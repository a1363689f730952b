"""In which order a run's tests start: the longest first, so that the last one to finish is not a long
one started late (on two slots, a 5-minute test started last makes the run 5 minutes longer than it
need be). A test's expected length is its latest attempt's on this product and testbed; a test never
run here that needs a reboot or a whole machine is taken for a long one. Ties keep the plan's order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from imageci.capabilities import ISOLATION_MACHINE, REBOOT
from imageci.engine.results import TestResult

LONG = 300.0  # seconds expected of a never-run test that reboots or needs a whole machine
T = TypeVar("T", bound=TestResult)


def expected(result: TestResult, durations: Mapping[tuple[str, str], float]) -> float:
    known = durations.get((result.check.id, result.testbed))
    if known is not None:
        return known
    return LONG if {REBOOT, ISOLATION_MACHINE} & set(result.check.needs) else 0.0


def longest_first(todo: Sequence[T], durations: Mapping[tuple[str, str], float]) -> list[T]:
    """``todo`` ordered by expected length, longest first (stable: equal ones keep their order)."""
    return sorted(todo, key=lambda r: -expected(r, durations))
