"""What a run will do, decided before anything runs (``Engine.plan``), and the verdicts reached
without running: an earlier pass reused, a skip, or an image that could not be fetched."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from imageci.capabilities import AUTO, LIGHTEST
from imageci.checks.base import Check, Outcome
from imageci.engine.results import TestResult
from imageci.store.models import Attempt, Version
from imageci.testbeds.base import Backend, ImageHandle
from imageci.verdicts import Verdict


@dataclass
class Planned:
    """One check × testbed of a schedule and what it gets."""

    result: TestResult
    cached: Attempt | None = None  # an earlier pass of these bytes with this test content: reused
    decided: Outcome | None = None  # a verdict reached without a testbed (a skip and its reason)

    @property
    def runs(self) -> bool:
        return self.cached is None and self.decided is None


@dataclass
class Schedule:
    """What a run will do, decided before anything runs (``Engine.plan``)."""

    image: ImageHandle
    testbeds: list[str]
    items: list[Planned]

    @property
    def to_run(self) -> list[TestResult]:
        return [i.result for i in self.items if i.runs]


def unfetchable(version: Version, checks: Sequence[Check], testbeds: Sequence[str], why: str) -> Schedule:
    """A schedule whose every item is an ``error``: the image's bytes could not be fetched for any testbed."""
    image = ImageHandle(digest=version.digest, name=version.product.name, rootfs_tar=Path("/nonexistent"))
    outcome = Outcome(Verdict.ERROR, f"testbed error: the image could not be fetched: {why}")  # no log: no store
    return Schedule(image, list(testbeds), [Planned(TestResult(c, tb), decided=outcome) for c in checks
                                            for tb in testbeds])


class Placer:
    """``auto``: each check on the lightest testbed of ``backends`` (in ``LIGHTEST``'s order) that can run it
    for this image — usable here, allowed by the test, offering every capability it needs."""

    def __init__(self, image: ImageHandle, backends: Mapping[str, Backend]) -> None:
        self.image, self.backends = image, backends
        self._unusable: dict[str, str | None] = {}
        self._offers: dict[str, frozenset[str]] = {}

    def place(self, check: Check) -> tuple[str, str | None]:
        """(the testbed, None), or (``auto``, why no testbed of this host can run it)."""
        whys = []
        for tb in (t for t in LIGHTEST if t in self.backends):
            if tb not in self._unusable:
                self._unusable[tb] = self.backends[tb].why_not(self.image)
            missing = sorted(set(check.needs) - self._offered(tb)) if self._unusable[tb] is None else []
            if self._unusable[tb] is not None:
                whys.append(f"{tb}: {self._unusable[tb]}")
            elif check.testbeds and tb not in check.testbeds:
                whys.append(f"{tb}: the test runs only on {', '.join(check.testbeds)}")
            elif missing:
                whys.append(f"{tb} lacks {', '.join(missing)}")
            else:
                return tb, None
        return AUTO, "no testbed of this host can run it (" + "; ".join(whys) + ")"

    def _offered(self, tb: str) -> frozenset[str]:
        if tb not in self._offers:
            self._offers[tb] = frozenset(self.backends[tb].capabilities(self.image))
        return self._offers[tb]


def explained(outcome: Outcome, notes: list[str]) -> Outcome:
    """A verdict that a limit may have caused names the limit first."""
    if not notes or outcome.verdict in (Verdict.PASS, Verdict.SKIP):
        return outcome
    said = "; ".join(notes)
    reason = f"{said} — {outcome.reason}" if outcome.reason else said
    log = outcome.log + b"".join(f"# limit: {n}\n".encode() for n in notes)
    return replace(outcome, reason=reason, log=log)
