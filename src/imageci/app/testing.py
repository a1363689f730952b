"""Execute a test plan: the engine runs it and records every attempt; then the
reports (JUnit, TAP) and the run's reproducer are written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from imageci.app import livelogs, notify
from imageci.app.planning import TestPlan, TestRequest, plan_tests
from imageci.app.session import Session
from imageci.app.versions import config_of, gate_of
from imageci.checks.consumer import PREFIX as CONSUMER_PREFIX
from imageci.engine.budget import Budget, default_budget
from imageci.engine.results import RunReport, TestResult
from imageci.engine.runner import Dispatcher, Engine, EventFn
from imageci.exitcodes import ExitCode
from imageci.reports.junit import write_junit
from imageci.reports.reproducer import RunSpec, write_reproducer
from imageci.reports.tap import write_tap
from imageci.store.models import Attempt, State, label
from imageci.testbeds.registry import make_backend

if TYPE_CHECKING:
    from imageci.app.consumerruns import ConsumerOrigin

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


AttemptFn = Callable[[AttemptEvent], None]


def _engine_events(on_attempt: AttemptFn | None) -> EventFn | None:
    if on_attempt is None:
        return None

    def relay(what: str, result: TestResult, attempt: Attempt | None) -> None:
        if attempt is not None:
            on_attempt(AttemptEvent(test=result.test_id, testbed=result.testbed, attempt=attempt.attempt,
                                    verdict=attempt.verdict, reason=attempt.reason, cached=what == "cached",
                                    seconds=(attempt.ended_at - attempt.started_at).total_seconds(),
                                    worker=attempt.worker or ""))

    return relay


@dataclass
class RunOutcome:
    plan: TestPlan
    report: RunReport
    reproducer: Path
    spec: RunSpec
    baseline: RunOutcome | None = None  # consumers run on the stable version too, to tell a regression

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

    return CeleryDispatcher(broker(session.settings), label(plan.version), on_status=on_status)


def execute(session: Session, plan: TestPlan, on_event: AttemptFn | None = None,
            on_status: StatusFn | None = None) -> RunOutcome:
    """Run ``plan``; ``on_event`` sees every attempt, ``on_status`` how jobs on workers go (started where,
    waiting for what)."""
    request = plan.request
    backends = {name: make_backend(name, session.settings) for name in plan.testbeds}
    settings = session.settings
    engine = Engine(session.catalog, session.store, backends, jobs=plan.jobs, on_event=_engine_events(on_event),
                    fresh=plan.fresh,
                    waiver=plan.waiver, owner=str(session.owner.lock_path), limits=plan.limits,
                    budget=Budget(default_budget(settings.memory_budget_mb, settings.cpu_budget)),
                    dispatcher=_dispatcher(session, plan, on_status))
    version = plan.version
    report = engine.run(version, plan.checks, plan.testbeds, retries=request.retries, rerun_all=request.rerun_all,
                        image=engine.image_handle(version, config_of(session, version)),
                        options=_recorded_options(request, plan))
    if plan.executor != "local":
        livelogs.sweep(session)  # the workers' live logs: the attempts have them now
    if request.junit:
        write_junit(report, request.junit, lambda r: log_text(session, r))
    if request.tap:
        write_tap(report, request.tap)
    spec = RunSpec(report.run_id, label(version), version.digest, plan.suite_dir,
                   [c.id for c in plan.checks] if request.tests else None, plan.testbeds, request.retries, plan.jobs,
                   request.fresh, list(request.dep8), plan.fetched, request.quarantine, list(request.structure),
                   list(request.testinfra), list(request.limits), suite_given=request.suite is not None)
    reproducer = write_reproducer(session.settings.runs_dir / str(report.run_id), spec)
    return RunOutcome(plan, report, reproducer, spec)


def _recorded_options(request: TestRequest, plan: TestPlan) -> dict[str, object]:
    """What the run's record says of how it was asked for, besides its tests and testbeds (a reproducer made
    from the record needs it): the executor, whether tests were named, whether the suite came from files."""
    options: dict[str, object] = {}
    if plan.executor != "local":
        options["executor"] = plan.executor
    if request.tests:
        options["named"] = True
    if request.suite is not None or request.extra:
        options["suite_given"] = True
    return options


def run_tests(session: Session, request: TestRequest, *, on_plan: PlanFn | None = None,
              on_event: AttemptFn | None = None, on_status: StatusFn | None = None,
              consumers_from: ConsumerOrigin | None = None) -> RunOutcome:
    """Plan and execute; ``on_plan`` sees the plan before anything runs, ``on_event`` every attempt,
    ``on_status`` the jobs' progress on workers. ``consumers_from``: the server whose consumers run (a
    remote run; the server judges them, so nothing runs on this home's stable version)."""
    plan = plan_tests(session, request, consumers_from=consumers_from)
    if on_plan is not None:
        on_plan(plan)
    outcome = execute(session, plan, on_event, on_status)
    if outcome.exit_code != ExitCode.INTERRUPTED:
        notify.new_failures(session, outcome.report)
    ran_consumers = any(c.id.startswith(CONSUMER_PREFIX) for c in plan.checks)
    if (consumers_from is None and ran_consumers and outcome.exit_code != ExitCode.INTERRUPTED
            and plan.version.state == State.TESTING):
        outcome.baseline = _consumer_baseline(session, plan, on_status)
    return outcome


def _consumer_baseline(session: Session, plan: TestPlan, on_status: StatusFn | None) -> RunOutcome | None:
    """Consumers that failed on the version and have no verdict on the current stable version at their newest
    snapshot run there too: the gate can then tell a regression from a suite that fails anyway."""
    from imageci.app import consumerruns

    needed = consumerruns.baseline_needed(session, session.catalog.resolve(label(plan.version)))
    if needed is None:
        return None
    stable, names = needed
    g = gate_of(plan.version)
    request = plan.request.model_copy(update={
        "ref": label(stable), "tests": [f"{CONSUMER_PREFIX}{n}" for n in names], "suite": None, "dep8": [],
        "dep8_packages": [], "structure": [], "testinfra": [], "junit": None, "tap": None, "rerun_all": False,
        "testbeds": list(g.testbeds) if g is not None else plan.testbeds})
    return execute(session, plan_tests(session, request), None, on_status)
