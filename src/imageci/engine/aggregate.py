"""From attempts to one verdict per (test, testbed), and from those to an exit code."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from imageci.exitcodes import ExitCode
from imageci.verdicts import Verdict, worst


def aggregate(attempts: Sequence[Verdict], known_flaky: bool = False) -> Verdict:
    """Pass at least once → pass (flaky if it also failed). Otherwise worst wins;
    a test marked flaky that never passed is reported flaky, not failed."""
    if not attempts:
        raise ValueError("no attempts")
    if Verdict.PASS in attempts:
        bad = any(v in (Verdict.FAIL, Verdict.ERROR) for v in attempts)
        return Verdict.FLAKY if bad else Verdict.PASS
    if all(v == Verdict.SKIP for v in attempts):
        return Verdict.SKIP
    w = worst(v for v in attempts if v != Verdict.SKIP)
    assert w is not None
    if w == Verdict.FAIL and known_flaky:
        return Verdict.FLAKY
    return w


def exit_code_for(verdicts: Iterable[Verdict]) -> ExitCode:
    vs = list(verdicts)
    if Verdict.ERROR in vs:
        return ExitCode.ERROR
    if Verdict.FAIL in vs:
        return ExitCode.FAILED
    if not any(v in (Verdict.PASS, Verdict.FLAKY) for v in vs):
        return ExitCode.NO_TESTS
    return ExitCode.OK
