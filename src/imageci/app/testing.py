"""Execute a test plan: the engine runs it and records every attempt; then the
reports (JUnit, TAP) and the run's reproducer are written."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from imageci.app import holds, knownfailures, livelogs, notify, regressions
from imageci.app.holds import Holding, HoldRow
from imageci.app.planning import TestPlan, TestRequest, plan_tests
from imageci.app.session import Session
from imageci.checks import complaints
from imageci.engine.budget import Budget, default_budget
from imageci.engine.results import RunReport, TestResult
from imageci.engine.runner import Dispatcher, Engine, EventFn
from imageci.errors import ImageciError
from imageci.exitcodes import ExitCode
from imageci.policy.reference import Change
from imageci.reports.junit import write_junit
from imageci.reports.reproducer import RunSpec, write_reproducer
from imageci.reports.tap import write_tap
from imageci.store import lookups
from imageci.store.models import Attempt, label
from imageci.testbeds.registry import expanded, make_backend

if TYPE_CHECKING:
    from imageci.app.bisect import BisectResult
    from imageci.app.consumerruns import ConsumerOrigin

log = logging.getLogger("imageci.app")
REQUEST_OPTION = "request"  # how the run was asked for (a TestRequest, as JSON): what `imageci rerun` repeats
PlanFn = Callable[[TestPlan], None]
StatusFn = Callable[[str], None]


class AttemptEvent(BaseModel):
    """One attempt as an interface shows it while a run goes on."""

    test: str
    testbed: str
    attempt: int
    verdict: str
    seconds: float
    reason: str
    cached: bool  # an earlier pass of these bytes and this test, reused
    worker: str = ""  # the Celery worker that ran it ("" : this process)
    known: str = ""  # the tracker of the known failure its log matched
    findings: list[str] = []  # the machine's own complaints in its window, "KIND: TEXT" each


AttemptFn = Callable[[AttemptEvent], None]
HeldFn = Callable[[list[HoldRow]], None]  # the testbeds just held, as soon as they are


def _engine_events(on_attempt: AttemptFn | None) -> EventFn | None:
    if on_attempt is None:
        return None

    def relay(what: str, result: TestResult, attempt: Attempt | None) -> None:
        if attempt is not None:
            on_attempt(AttemptEvent(test=result.test_id, testbed=result.testbed, attempt=attempt.attempt,
                                    verdict=attempt.verdict, reason=attempt.reason, cached=what == "cached",
                                    seconds=(attempt.ended_at - attempt.started_at).total_seconds(),
                                    worker=attempt.worker or "", known=attempt.known or "",
                                    findings=[f"{f.kind}: {f.text}" for f in complaints.decoded(attempt.findings)]))

    return relay


@dataclass
class RunOutcome:
    plan: TestPlan
    report: RunReport
    reproducer: Path
    spec: RunSpec
    baseline: RunOutcome | None = None  # the reference run: what failed here, on the stable version
    reference: str | None = None  # the stable version (NAME@SERIAL) the verdicts were told against
    investigated: list[BisectResult] = field(default_factory=list)  # the regressions bisected (--investigate)
    held: list[HoldRow] = field(default_factory=list)  # failing tests' testbeds held (--hold-on-failure)

    @property
    def exit_code(self) -> ExitCode:
        return self.report.exit_code


def log_text(session: Session, result: TestResult) -> str:
    """The log of a result's latest attempt that has one."""
    for a in reversed(result.attempts):
        if a.log_digest and session.store.has(a.log_digest):
            return session.store.path(a.log_digest).read_text(encoding="utf-8", errors="replace")
    return ""


def _dispatcher(session: Session, plan: TestPlan, on_status: StatusFn | None) -> Dispatcher | None:
    """Where the plan's tests run: here (None), or as jobs on Celery workers that record their attempts
    through the server whose home this is."""
    if plan.executor != "celery":
        return None
    from imageci.app.workers import broker
    from imageci.engine.fanout import CeleryDispatcher

    return CeleryDispatcher(broker(session.settings), label(plan.version), on_status=on_status,
                            complaints=plan.suite.complaints if plan.suite else True,
                            fail_on=plan.suite.fail_on if plan.suite else frozenset(),
                            hold=plan.request.hold.total_seconds() if plan.request.hold else 0)


def execute(session: Session, plan: TestPlan, on_event: AttemptFn | None = None,
            on_status: StatusFn | None = None, *, options: dict[str, object] | None = None,
            reports: bool = True, repeats: int | None = None, on_held: HeldFn | None = None) -> RunOutcome:
    """Run ``plan``; ``on_event`` sees every attempt, ``on_status`` how jobs on workers go (started where,
    waiting for what); ``options`` are recorded with the run besides how it was asked for. ``reports``:
    write the JUnit and TAP files the request names (else the caller does, with more to say)."""
    request = plan.request
    backends = {name: make_backend(name, session.settings) for name in expanded(plan.testbeds)}
    settings = session.settings
    engine = Engine(session.catalog, session.store, backends, jobs=plan.jobs, on_event=_engine_events(on_event),
                    fresh=plan.fresh, complaints=plan.suite.complaints if plan.suite else True,
                    fail_on=plan.suite.fail_on if plan.suite else frozenset(),
                    waiver=plan.waiver, owner=str(session.owner.lock_path), limits=plan.limits,
                    budget=Budget(default_budget(settings.memory_budget_mb, settings.cpu_budget)),
                    dispatcher=_dispatcher(session, plan, on_status),
                    known=knownfailures.matcher(knownfailures.known_for(session, plan.version.product.name,
                                                                        plan.suite)))
    holding = Holding(session, request.hold) if request.hold else None
    engine.hold = holding.take if holding else None
    version = plan.version
    report = engine.run(version, plan.checks, plan.testbeds, retries=request.retries, rerun_all=request.rerun_all,
                        config=plan.config, unfetched=plan.unfetched,
                        options={**_recorded_options(request, plan), **(options or {})}, repeats=repeats)
    held = holding.detach(report.run_id, backends) if holding else []
    if request.hold and plan.executor != "local":  # the workers hold them (through the server)
        held = [h for h in holds.held(session) if h.run == report.run_id]
    if held and on_held is not None:
        on_held(held)
    if plan.executor != "local":
        livelogs.sweep(session)  # the workers' live logs: the attempts have them now
    if reports:
        write_reports(session, request, report)
    spec = RunSpec(report.run_id, label(version), version.digest, plan.suite_dir,
                   [c.id for c in plan.checks] if request.tests else None, plan.testbeds, request.retries, plan.jobs,
                   request.fresh, list(request.dep8), plan.fetched, request.quarantine, list(request.structure),
                   list(request.testinfra), list(request.limits), suite_given=request.suite is not None)
    reproducer = write_reproducer(session.settings.runs_dir / str(report.run_id), spec)
    return RunOutcome(plan, report, reproducer, spec, held=held)


def write_reports(session: Session, request: TestRequest, report: RunReport) -> None:
    """The JUnit and TAP files the request names."""
    if request.junit:
        write_junit(report, request.junit, lambda r: log_text(session, r))
    if request.tap:
        write_tap(report, request.tap)


def _recorded_options(request: TestRequest, plan: TestPlan) -> dict[str, object]:
    """What the run's record says of how it was asked for, besides its tests and testbeds (a reproducer made
    from the record needs it): the executor, whether tests were named, whether the suite came from files."""
    options: dict[str, object] = {REQUEST_OPTION: request.model_dump(mode="json", exclude={"junit", "tap", "hold"})}
    if plan.executor != "local":
        options["executor"] = plan.executor
    if request.tests:
        options["named"] = True
    if request.suite is not None or request.extra:
        options["suite_given"] = True
    return options


def run_tests(session: Session, request: TestRequest, *, on_plan: PlanFn | None = None,
              on_event: AttemptFn | None = None, on_status: StatusFn | None = None,
              consumers_from: ConsumerOrigin | None = None, on_held: HeldFn | None = None) -> RunOutcome:
    """Plan and execute; ``on_plan`` sees the plan before anything runs, ``on_event`` every attempt,
    ``on_status`` the jobs' progress on workers. ``consumers_from``: the server whose consumers run (a
    remote run; the server judges them, so nothing runs on this home's stable version)."""
    plan = plan_tests(session, request, consumers_from=consumers_from)
    if on_plan is not None:
        on_plan(plan)
    outcome = execute(session, plan, on_event, on_status, reports=False, on_held=on_held)
    if outcome.exit_code != ExitCode.INTERRUPTED:
        if consumers_from is None:  # (a remote run: the server tells its verdicts against its stable version)
            outcome.baseline = _reference_run(session, plan, on_status)
            outcome.reference = _classify(session, outcome.report)
            outcome.investigated = _investigate(session, plan, outcome.report, outcome.reference, on_status)
        notify.new_failures(session, outcome.report, {(b.test, b.testbed): f"bisect {b.finding}: {b.explanation}"
                                                      for b in outcome.investigated})
    write_reports(session, request, outcome.report)
    return outcome


def investigating(plan: TestPlan) -> bool:
    """Whether the run's regressions are bisected: ``--investigate``/``--no-investigate``, else the suite's
    ``investigate``."""
    asked = plan.request.investigate
    return asked if asked is not None else bool(plan.suite and plan.suite.investigate)


def _investigate(session: Session, plan: TestPlan, report: RunReport, reference: str | None,
                 on_status: StatusFn | None) -> list[BisectResult]:
    """Each regression bisected against the stable version (``investigate``), within the run's budget of
    test runs; a test that cannot be bisected is said so and skipped."""
    if not investigating(plan) or reference is None:
        return []
    from imageci.app.bisect import BisectArgs, run_bisect

    budget, out = plan.request.investigate_budget, []
    for r in report.results:
        if r.change != Change.REGRESSION or budget <= 0:
            continue
        if on_status is not None:
            on_status(f"bisecting {r.test_id} on {r.testbed}: {reference} .. {label(report.version)}")
        try:
            found = run_bisect(session, BisectArgs(ref=label(report.version), test=r.test_id, testbed=r.testbed,
                                                   good=reference, budget=budget, jobs=plan.jobs))
        except ImageciError as exc:
            log.warning("not bisected: %s on %s: %s", r.test_id, r.testbed, exc)
            continue
        budget -= found.test_runs
        out.append(found)
    return out


def _classify(session: Session, report: RunReport) -> str | None:
    """Each result's change against the current stable version (set on the result); that version's
    NAME@SERIAL (None: the version is not on testing, or there is no stable version)."""
    ref = regressions.reference_for(session, lookups.resolve(session.reader, label(report.version)))
    if ref is None:
        return None
    for r in report.results:
        change = ref.change((r.test_id, r.testbed, r.check.digest), [a.verdict for a in r.attempts])
        r.change, r.change_why = (change.value, ref.why(change)) if change is not None else ("", "")
    return ref.label


def _reference_run(session: Session, plan: TestPlan, on_status: StatusFn | None) -> RunOutcome | None:
    """The tests that failed on the version and never ran on the current stable version with the same content
    run there now, the same checks on the same testbeds (recorded as a reference run): each verdict can then
    be told a regression or a failure stable had too (``app.regressions``)."""
    version = lookups.resolve(session.reader, label(plan.version))
    keys = [(c.id, tb, c.digest) for c in plan.checks for tb in plan.testbeds]
    needed = regressions.references_needed(session, version, keys)
    if needed is None:
        return None
    stable, missing = needed
    return execute(session, reference_plan(session, plan, stable.label, missing), None, on_status,
                   options={regressions.REFERENCE_OPTION: label(plan.version)})


def reference_plan(session: Session, plan: TestPlan, stable: str, missing: Sequence[regressions.Key]) -> TestPlan:
    """``plan`` narrowed to the ``missing`` tests and testbeds, of the version ``stable`` (on this home)."""
    ids = {test for test, _tb, _digest in missing}
    beds = [tb for tb in plan.testbeds if any(m[1] == tb for m in missing)]
    request = plan.request.model_copy(update={"ref": stable, "junit": None, "tap": None, "rerun_all": False,
                                              "hold": None})
    return replace(plan, request=request, version=session.catalog.resolve(stable),
                   checks=[c for c in plan.checks if c.id in ids], testbeds=beds)
