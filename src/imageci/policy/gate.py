"""The promotion gate: every required test has passed on every required testbed
for exactly these image bytes and exactly this test content.

Satisfying a requirement: at least one attempt passed; or the test's latest
attempt was a skip the test itself reported (exit 77: "does not apply here").
A test marked ``flaky: true`` in its metadata never blocks (it is reported),
nor does one waived by flake policy (quarantined, or new within its grace).
Skips made by the harness (not executable, testbed lacks a capability) do
not satisfy a requirement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from imageci.checks.base import Check
from imageci.engine.waivers import WaiverFn
from imageci.errors import UsageError
from imageci.store.catalog import Catalog
from imageci.store.models import Attempt, Version
from imageci.verdicts import SKIP_EXIT_CODE, Verdict


@dataclass
class GateResult:
    holds: bool
    satisfied: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str, str]] = field(default_factory=list)  # (test, testbed, why)

    def explain(self) -> str:
        if self.holds:
            return f"gate holds: {len(self.satisfied)} requirement(s) met"
        lines = [f"gate does not hold: {len(self.missing)} requirement(s) unmet"]
        lines += [f"  {t} on {tb}: {why}" for t, tb, why in self.missing]
        return "\n".join(lines)


def required_checks(checks: Sequence[Check], tests: str | Sequence[str]) -> list[Check]:
    if tests == "all":
        return list(checks)
    by_id = {c.id: c for c in checks}
    unknown = [t for t in tests if t not in by_id]
    if unknown:
        raise UsageError(f"gate names tests that are not in the suite: {', '.join(unknown)}")
    return [by_id[t] for t in tests]


def _satisfied(attempts: Sequence[Attempt], known_flaky: bool) -> bool:
    if any(a.verdict == Verdict.PASS for a in attempts):
        return True
    if not attempts:
        return False
    last = attempts[-1]
    self_skipped = last.verdict == Verdict.SKIP and last.exit_code == SKIP_EXIT_CODE
    return self_skipped or known_flaky


def evaluate_gate(catalog: Catalog, version: Version, checks: Sequence[Check],
                  testbeds: Sequence[str], waiver: WaiverFn | None = None) -> GateResult:
    result = GateResult(holds=True)
    attempts = catalog.attempts(version.digest, [c.id for c in checks])
    for check in checks:
        for tb in testbeds:
            mine = [a for a in attempts if a.test_id == check.id and a.testbed == tb and a.test_digest == check.digest]
            waived = waiver(check.id, tb) if waiver is not None else None
            if waived is not None or _satisfied(mine, known_flaky=check.flaky):
                result.satisfied.append((check.id, tb))
            else:
                why = "never run" if not mine else f"latest attempt: {mine[-1].verdict}" + (
                    f" ({mine[-1].reason})" if mine[-1].reason else "")
                result.missing.append((check.id, tb, why))
    result.holds = not result.missing
    return result
