"""``imageci rerun RUN [--failed] [--testbed T]``: the tests of an earlier run again, on the same bytes and
the same test content, as a new run that names the one it repeats (``runs.repeats``).

The run's record keeps how it was asked for (``testing.REQUEST_OPTION``); the new run is planned from it
with the image pinned to the version (its serial: the same bytes) the run tested. ``--failed`` keeps the
tests whose last attempt on some testbed failed or was an error, and reuses what passed on the other
testbeds (nothing that passed runs again); without it every test runs again. A test whose content changed
since (its digest differs) is refused: that is a new test, for ``imageci run``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from imageci.app.planning import TestPlan, TestRequest, plan_tests
from imageci.app.session import Session
from imageci.app.testing import REQUEST_OPTION
from imageci.errors import UnknownReferenceError, UsageError
from imageci.store import lookups
from imageci.store.lookups import AttemptInfo
from imageci.verdicts import Verdict

DID_NOT_PASS = (Verdict.FAIL.value, Verdict.ERROR.value)


@dataclass(frozen=True)
class Rerun:
    """What a rerun will do: the plan (None: nothing failed, nothing to run) and the run it repeats."""

    repeats: int
    plan: TestPlan | None
    tests: list[str]  # the test ids it runs again


def _recorded(session: Session, run_id: int) -> tuple[TestRequest, str, list[AttemptInfo]]:
    """The request a run was made from, with its image pinned to the bytes it tested, and its attempts."""
    found = lookups.run_of(session.reader, run_id)
    info, digest, version = found if found is not None else (None, "", None)
    if info is None or version is None:
        raise UnknownReferenceError(f"no run {run_id} on this home")
    if info.status == "running":
        raise UsageError(f"run {run_id} is still running: re-run it once it has ended")
    asked = json.loads(info.options).get(REQUEST_OPTION)
    if not isinstance(asked, dict):
        raise UsageError(f"run {run_id} was recorded before imageci kept how each run was asked for: run its tests "
                         "again with `imageci run` or `imageci test`")
    request = TestRequest.model_validate({**asked, "ref": version.label})  # a serial names its bytes for good
    return request, digest, [a for a in lookups.attempts(session.reader, digest) if a.run_id == run_id]


def _failed(attempts: list[AttemptInfo]) -> list[str]:
    """The tests whose last attempt on some testbed failed or was an error, in the run's order."""
    last: dict[tuple[str, str], str] = {}
    for a in attempts:
        last[(a.test_id, a.testbed)] = a.verdict
    return list(dict.fromkeys(t for (t, _bed), v in last.items() if v in DID_NOT_PASS))


def plan_rerun(session: Session, run_id: int, *, failed: bool = False, testbeds: list[str] | None = None,
               jobs: int | None = None) -> Rerun:
    """The new run of ``run_id``'s tests (only those that did not pass, with ``failed``), on ``testbeds`` when
    given (else the run's)."""
    request, _digest, attempts = _recorded(session, run_id)
    wanted = _failed(attempts) if failed else list(dict.fromkeys(a.test_id for a in attempts))
    if not wanted:
        return Rerun(run_id, None, [])
    request = request.model_copy(update={"testbeds": testbeds or request.testbeds, "rerun_all": not failed,
                                         "jobs": jobs or request.jobs, "investigate": False})
    plan = plan_tests(session, request)
    recorded = {a.test_id: a.test_digest for a in attempts}
    by_id = {c.id: c for c in plan.checks}
    gone = [t for t in wanted if t not in by_id]
    changed = [t for t in wanted if t in by_id and by_id[t].digest != recorded[t]]
    if gone or changed:
        said = "; ".join(part for part in (
            f"no longer in its suite: {', '.join(gone)}" if gone else "",
            f"changed since: {', '.join(changed)}" if changed else "") if part)
        raise UsageError(f"run {run_id} cannot be repeated with the same test content ({said}): run them as new "
                         "tests with `imageci run`")
    return Rerun(run_id, replace(plan, checks=[by_id[t] for t in wanted]), wanted)
