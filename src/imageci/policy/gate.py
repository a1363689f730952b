"""The promotion gate: every required test has evidence on exactly these image
bytes and exactly this test content, on every required testbed.

Evidence is an attempt recorded for (image digest, test id, test digest,
testbed). A requirement with no such attempt is never met, whatever policy
says: a test that never ran on these bytes proves nothing. With evidence, a
requirement is met when:

- an attempt passed; or
- the latest attempt is a skip the test itself reported (exit 77: "does not
  apply here"); or
- the test ran (pass, fail or flaky; an ``error`` means the harness broke and
  says nothing about the image) and either it is marked ``flaky: true`` or a
  warn-mode waiver is in force (quarantine ``warn``, or a new test in its
  grace period): its failures are reported but do not block; or
- a skip-mode quarantine is in force and its skip was recorded; or
- it failed here and on the stable version too (``always-failed``, ``policy.reference``) and the
  gate allows that (``gate: {allow: [always-failed]}``): accepted, and named as such.

Skips made by the harness (not executable, testbed lacks a capability) and
errors never satisfy a requirement on their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from imageci.capabilities import AUTO, LIGHTEST
from imageci.engine.waivers import Waiver, WaiverFn
from imageci.errors import UsageError
from imageci.policy.reference import Change
from imageci.policy.sections import GateSection
from imageci.verdicts import SKIP_EXIT_CODE, Verdict

R = TypeVar("R", bound="Required")
Changes = Mapping[tuple[str, str, str], Change | None]  # (test, testbed, test digest) → against stable


class Required(Protocol):
    """A test the gate requires (a ``checks.base.Check``): its id, its content's digest, whether it is
    known to be flaky."""

    @property
    def id(self) -> str: ...

    @property
    def digest(self) -> str: ...

    @property
    def flaky(self) -> bool: ...


class Seen(Protocol):
    """One recorded attempt on the version's bytes (a catalog ``Attempt``)."""

    @property
    def test_id(self) -> str: ...

    @property
    def testbed(self) -> str: ...

    @property
    def test_digest(self) -> str: ...

    @property
    def verdict(self) -> str: ...

    @property
    def exit_code(self) -> int | None: ...

    @property
    def reason(self) -> str: ...

    @property
    def known(self) -> str | None: ...  # the tracker of the known failure its log matched


@dataclass(frozen=True)
class ArchGate:
    """Another architecture's version of the same build, as the gate sees it."""

    architecture: str
    image: str | None  # NAME-ARCH@SERIAL; None: not built
    why: str | None  # why its gate does not hold (None: it holds)


@dataclass
class GateResult:
    holds: bool
    satisfied: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str, str]] = field(default_factory=list)  # (test, testbed, why)
    siblings: list[ArchGate] = field(default_factory=list)  # the build's other architectures
    sections: list[GateSection] = field(default_factory=list)  # vulnerabilities, …: each must hold too
    accepted: list[tuple[str, str, str]] = field(default_factory=list)  # (test, testbed, why): allowed failures
    changes: dict[tuple[str, str], Change] = field(default_factory=dict)  # (test, testbed) → against stable

    def with_siblings(self, siblings: Sequence[ArchGate]) -> GateResult:
        """This gate, holding only when every other architecture's gate holds too."""
        return replace(self, holds=self.holds and all(s.why is None for s in siblings), siblings=list(siblings))

    def with_sections(self, sections: Sequence[GateSection]) -> GateResult:
        """This gate, holding only when each of ``sections`` holds too."""
        return replace(self, holds=self.holds and all(s.holds for s in sections),
                       sections=[*self.sections, *sections])

    def _told(self, test: str, testbed: str) -> str:
        change = self.changes.get((test, testbed))
        return f" [{change}]" if change is not None else ""

    def explain(self) -> str:
        archs = f" on every architecture ({len(self.siblings) + 1})" if self.siblings else ""
        parts = [f"{s.name}: {s.summary}" for s in self.sections]
        allowed = [f"  accepted: {t} on {tb}: {why}" for t, tb, why in self.accepted]
        if self.holds:
            met = f"gate holds: {len(self.satisfied)} requirement(s) met{archs}"
            if self.accepted:
                met += f", {len(self.accepted)} of them failures the stable version had too (allowed)"
            return "\n".join(["; ".join([met, *parts]), *allowed])
        failing = [s for s in self.siblings if s.why is not None]
        unheld = [s for s in self.sections if not s.holds]
        why = [f"{len(self.missing)} requirement(s) unmet"] if self.missing else []
        why += [f"{len(failing)} other architecture(s) not passed"] if failing else []
        why += [f"{', '.join(s.name for s in unheld)} not passed"] if unheld else []
        lines = ["gate does not hold: " + ", and ".join(why or ["0 requirement(s) unmet"])]
        lines += [f"  {t} on {tb}{self._told(t, tb)}: {why}" for t, tb, why in self.missing]
        lines += allowed
        lines += [f"  arch {s.architecture} ({s.image or 'not built'}): {s.why}" for s in failing]
        for s in self.sections:
            lines.append(f"  {s.name}: {s.summary}")
            lines += [f"    {line}" for line in s.lines]
        return "\n".join(lines)


def required_checks(checks: Sequence[R], tests: str | Sequence[str]) -> list[R]:
    if tests == "all":
        return list(checks)
    by_id = {c.id: c for c in checks}
    unknown = [t for t in tests if t not in by_id]
    if unknown:
        raise UsageError(f"gate names tests that are not in the suite: {', '.join(unknown)}")
    return [by_id[t] for t in tests]


RAN = (Verdict.PASS, Verdict.FAIL, Verdict.FLAKY)


def _self_skipped(attempt: Seen) -> bool:
    return attempt.verdict == Verdict.SKIP and attempt.exit_code == SKIP_EXIT_CODE


def unmet(attempts: Sequence[Seen], known_flaky: bool, waiver: Waiver | None) -> str | None:
    """Why a requirement is not met by ``attempts`` (its evidence: these bytes, this test content,
    this testbed, oldest first), or None when it is."""
    if not attempts:
        return "never run on these bytes with this test content"
    if any(a.verdict == Verdict.PASS for a in attempts) or _self_skipped(attempts[-1]):
        return None
    ran = any(a.verdict in RAN or _self_skipped(a) for a in attempts)
    if ran and (known_flaky or (waiver is not None and waiver.mode == "warn")):
        return None
    if waiver is not None and waiver.mode == "skip":
        return None
    last = attempts[-1]
    why = f"latest attempt: {last.verdict}" + (f" ({last.reason})" if last.reason else "") \
        + (f" [known failure: {last.known}]" if last.known else "")
    if waiver is not None and not ran:
        why += f"; waived ({waiver.reason}), but it never ran on these bytes"
    return why


def evaluate_gate(attempts: Sequence[Seen], checks: Sequence[Required], testbeds: Sequence[str],
                  waiver: WaiverFn | None = None, *, changes: Changes | None = None,
                  allow: Sequence[str] = (), reference: str | None = None) -> GateResult:
    """The gate of a version whose recorded ``attempts`` (on its bytes, oldest first) are these. ``changes``:
    each (test, testbed, test digest)'s change against the stable version ``reference`` (NAME@SERIAL);
    ``allow``: the changes whose failures the gate accepts (``always-failed``)."""
    result = GateResult(holds=True)
    told = changes or {}
    evidence: dict[tuple[str, str, str], list[Seen]] = {}
    for a in attempts:  # oldest first, kept so in each group
        evidence.setdefault((a.test_id, a.testbed, a.test_digest), []).append(a)
    for check in checks:
        for asked in testbeds:  # ``auto``: the lightest testbed the test ran on (where auto put it)
            tb = asked if asked != AUTO else next((t for t in LIGHTEST if (check.id, t, check.digest) in evidence),
                                                  AUTO)
            mine = evidence.get((check.id, tb, check.digest), [])
            why = unmet(mine, check.flaky, waiver(check.id, tb) if waiver is not None else None)
            change = told.get((check.id, tb, check.digest))
            if change is not None:
                result.changes[(check.id, tb)] = change
            if why is None:
                result.satisfied.append((check.id, tb))
            elif change is not None and change in allow:
                result.satisfied.append((check.id, tb))
                result.accepted.append((check.id, tb, f"{why}; it failed on {reference or 'stable'} too "
                                                      f"(the gate allows {change})"))
            else:
                result.missing.append((check.id, tb, why))
    result.holds = not result.missing
    return result
