"""What a run gives back: each test's result on each testbed (its attempts, its verdict after retries
and waivers) and the run's report, whose exit code is the run's."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from imageci.checks.base import Check
from imageci.engine.aggregate import aggregate, exit_code_for
from imageci.exitcodes import ExitCode
from imageci.store.models import Attempt, Version
from imageci.verdicts import Verdict


@dataclass
class TestResult:
    __test__ = False
    check: Check
    testbed: str
    attempts: list[Attempt] = field(default_factory=list)
    cached: bool = False
    verdict: Verdict = Verdict.SKIP
    waived: str = ""  # a warn-mode waiver's reason: failures do not count
    change: str = ""  # against the stable version (app.regressions): regression, always-failed, fixed, new
    change_why: str = ""  # what that means, naming the stable version
    known_retries: int = 0  # re-runs a known failure its log matched allows (beyond --retries)

    @property
    def test_id(self) -> str:
        return self.check.id

    @property
    def reason(self) -> str:
        why = ""
        for a in reversed(self.attempts):
            if a.verdict != Verdict.PASS and a.reason:
                why = a.reason
                break
        if self.waived and self.verdict == Verdict.FLAKY:
            return f"{self.waived}; {why}" if why else self.waived
        return why

    @property
    def duration(self) -> float:
        return sum((a.ended_at - a.started_at).total_seconds() for a in self.attempts if not self.cached)

    def finalize(self) -> None:
        self.verdict = aggregate([Verdict(a.verdict) for a in self.attempts], self.check.flaky)
        if self.waived and self.verdict in (Verdict.FAIL, Verdict.ERROR):
            self.verdict = Verdict.FLAKY


@dataclass
class RunReport:
    run_id: int
    version: Version
    results: list[TestResult]
    started_at: datetime
    ended_at: datetime
    interrupted: bool = False

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted:
            return ExitCode.INTERRUPTED
        return exit_code_for(r.verdict for r in self.results)

    def counts(self) -> dict[str, int]:
        out = {v.value: 0 for v in Verdict}
        for r in self.results:
            out[r.verdict.value] += 1
        return out
