"""`imageci run`, `test` and `pipeline`: tests run here, of a version on this home or on a server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from imageci.cli.building import show_build
from imageci.cli.context import console, handle_errors
from imageci.cli.options import (
    ConsumersOpt,
    DefArg,
    Dep8Opt,
    Dep8PkgOpt,
    ExecutorOpt,
    FreshOpt,
    HoldOpt,
    InvestigateBudgetOpt,
    InvestigateOpt,
    JobsOpt,
    JunitOpt,
    LimitOpt,
    QuarantineOpt,
    RefArg,
    RerunOpt,
    RetriesOpt,
    StructureOpt,
    SuiteOpt,
    TapOpt,
    TestbedOpt,
    TestinfraOpt,
)

if TYPE_CHECKING:
    from imageci.app.passes import Passed
    from imageci.app.testrequest import Fresh, TestRequest


def register(main: typer.Typer) -> None:
    main.command()(run)
    main.command()(test)
    main.command()(pipeline)
    main.command()(rerun)


def _fresh(value: str | None) -> Fresh | None:
    from imageci.errors import UsageError

    if value == "test":
        return "test"
    if value == "suite":
        return "suite"
    if value is None:
        return None
    raise UsageError(f"--fresh must be 'test' or 'suite' (got {value!r})")


def _request(ref: str, tests: list[str] | None, suite: Path | None, testbed: list[str] | None, jobs: int | None,
             retries: int, rerun_all: bool, junit: Path | None, tap: Path | None, fresh: str | None,
             dep8: list[Path] | None, dep8_package: list[str] | None, quarantine: Path | None,
             structure: list[Path] | None, testinfra: list[Path] | None, limit: list[str] | None,
             executor: str | None = None, consumers: bool = True, investigate: bool | None = None,
             investigate_budget: int = 60, hold: str | None = None) -> TestRequest:
    from imageci.app.testrequest import TestRequest
    from imageci.errors import UsageError

    if executor not in (None, "local", "celery"):
        raise UsageError(f"--executor must be 'local' or 'celery' (got {executor!r})")
    if hold:
        from imageci.app.holds import hold_duration  # (the ORM: only a run that holds needs it this early)
        from imageci.definitions.durations import duration_arg
    return TestRequest(ref=ref, tests=tests, suite=suite, testbeds=testbed or [], jobs=jobs, retries=retries,
                       rerun_all=rerun_all, junit=junit, tap=tap, fresh=_fresh(fresh), dep8=dep8 or [],
                       dep8_packages=dep8_package or [], quarantine=quarantine, structure=structure or [],
                       testinfra=testinfra or [], limits=limit or [],
                       executor=executor, consumers=consumers, investigate=investigate,  # type: ignore[arg-type]
                       investigate_budget=investigate_budget,
                       hold=hold_duration(duration_arg(hold)) if hold else None)


def _show_passed(passed: Passed) -> None:
    print(f"testing {passed.image} (sha256:{passed.digest[:12]}): {len(passed.passes)} test(s) × "
          f"{', '.join(passed.testbeds)}")
    for p in passed.passes:
        print(f"  pass  {p.test} [{p.testbed}]  (cached: passed before for these bytes, run {p.run})")
    print(f"nothing ran: every test passed before on these bytes ({len(passed.passes)} pass; --rerun-all runs "
          "them again) → exit 0")


def _run(request: TestRequest) -> None:
    from imageci.app.session import Session
    from imageci.cli.sources import remote_client

    session = Session.open()
    client = remote_client(session.settings)
    if client is None:
        from imageci.app.passes import earlier_passes

        passed = earlier_passes(session, request)  # (read from the catalog alone: nothing to run)
        if passed is not None:
            _show_passed(passed)
            raise typer.Exit(0)
    from imageci.app.testing import run_tests
    from imageci.cli.testing import Steps, show_event, show_held, show_outcome, show_plan, show_status

    if client is None:
        outcome = run_tests(session, request, on_plan=show_plan, on_event=show_event, on_status=show_status,
                            on_held=show_held)
        show_outcome(outcome)
        raise typer.Exit(int(outcome.exit_code))
    from imageci.app.pipeline import test_via  # (a server's: what only a remote run needs)

    with Steps() as steps:
        outcome, recorded, image = test_via(session, client, client.remote.url, request, steps.hooks())
    show_held(outcome.held)  # (held here, where the tests ran)
    show_outcome(outcome)
    console.print(f"recorded on {client.remote.url}: run {recorded} of {image}", highlight=False)
    raise typer.Exit(int(outcome.exit_code))


@handle_errors
def run(ref: RefArg, tests: Annotated[list[str], typer.Argument(help="test names from the image's suite")],
        suite: SuiteOpt = None, testbed: TestbedOpt = None, jobs: JobsOpt = None, retries: RetriesOpt = 0,
        rerun_all: RerunOpt = False, junit: JunitOpt = None, tap: TapOpt = None, fresh: FreshOpt = None,
        dep8: Dep8Opt = None, dep8_package: Dep8PkgOpt = None, quarantine: QuarantineOpt = None,
        structure: StructureOpt = None, testinfra: TestinfraOpt = None, limit: LimitOpt = None,
        executor: ExecutorOpt = None, investigate: InvestigateOpt = None,
        investigate_budget: InvestigateBudgetOpt = 60, hold_on_failure: HoldOpt = None) -> None:
    """Run one or several tests against an image."""
    _run(_request(ref, tests, suite, testbed, jobs, retries, rerun_all, junit, tap, fresh, dep8, dep8_package,
                  quarantine, structure, testinfra, limit, executor, investigate=investigate,
                  investigate_budget=investigate_budget, hold=hold_on_failure))


@handle_errors
def test(ref: RefArg, suite: SuiteOpt = None, testbed: TestbedOpt = None, jobs: JobsOpt = None,
         retries: RetriesOpt = 0, rerun_all: RerunOpt = False, junit: JunitOpt = None, tap: TapOpt = None,
         fresh: FreshOpt = None, dep8: Dep8Opt = None, dep8_package: Dep8PkgOpt = None,
         quarantine: QuarantineOpt = None, structure: StructureOpt = None, testinfra: TestinfraOpt = None,
         limit: LimitOpt = None, executor: ExecutorOpt = None, consumers: ConsumersOpt = True,
         investigate: InvestigateOpt = None, investigate_budget: InvestigateBudgetOpt = 60,
         hold_on_failure: HoldOpt = None) -> None:
    """Run the image's whole suite and its consumers' suites (or, with --dep8/--dep8-package/--structure/
    --testinfra alone, only those). A test that fails on a testing version and has no verdict on the stable
    version runs there too, so each failure is told a regression or an old one."""
    _run(_request(ref, None, suite, testbed, jobs, retries, rerun_all, junit, tap, fresh, dep8, dep8_package,
                  quarantine, structure, testinfra, limit, executor, consumers, investigate=investigate,
                  investigate_budget=investigate_budget, hold=hold_on_failure))


@handle_errors
def pipeline(definition: DefArg,
             force_build: Annotated[bool, typer.Option("--force-build", help="rebuild even if unchanged")] = False,
             suite: SuiteOpt = None, testbed: TestbedOpt = None, jobs: JobsOpt = None, retries: RetriesOpt = 0,
             rerun_all: RerunOpt = False, junit: JunitOpt = None, tap: TapOpt = None, fresh: FreshOpt = None,
             dep8: Dep8Opt = None, dep8_package: Dep8PkgOpt = None, quarantine: QuarantineOpt = None,
             structure: StructureOpt = None, testinfra: TestinfraOpt = None, limit: LimitOpt = None,
             consumers: ConsumersOpt = True, investigate: InvestigateOpt = None,
             investigate_budget: InvestigateBudgetOpt = 60) -> None:
    """build → publish to testing → test the gate suite (and the consumers' suites) → promote to stable if the
    gate holds."""
    from imageci.app.pipeline import pipeline as run_pipeline
    from imageci.app.session import Session
    from imageci.cli.sources import remote_client
    from imageci.cli.testing import Steps, show_pipeline

    request = _request("", None, suite, testbed, jobs, retries, rerun_all, junit, tap, fresh, dep8, dep8_package,
                       quarantine, structure, testinfra, limit, consumers=consumers, investigate=investigate,
                       investigate_budget=investigate_budget)
    session = Session.open()
    client = remote_client(session.settings)
    with Steps(f"building {definition}…", building=definition.name, on_built=show_build) as steps:
        outcome = run_pipeline(session, definition, request, force_build=force_build, server=client,
                               url=client.remote.url if client else None, hooks=steps.hooks())
    show_pipeline(outcome)
    raise typer.Exit(int(outcome.exit_code))


@handle_errors
def rerun(run_id: Annotated[int, typer.Argument(metavar="RUN", min=1, help="the run to repeat (`imageci runs`, "
                                                "`imageci results`)")],
          failed: Annotated[bool, typer.Option("--failed", help="only the tests that did not pass (failed or an "
                                               "error on some testbed); what passed elsewhere is reused")] = False,
          testbed: TestbedOpt = None, jobs: JobsOpt = None, hold_on_failure: HoldOpt = None) -> None:
    """Run the tests of an earlier run again on the same bytes and the same test content, as a new run that
    names the one it repeats (`results` and the dashboard link the two). Exit codes as `imageci run`; 0 when
    --failed finds nothing that failed."""
    from dataclasses import replace

    from imageci.app.holds import hold_duration
    from imageci.app.reruns import plan_rerun
    from imageci.app.session import Session
    from imageci.app.testing import execute
    from imageci.cli.sources import remote_client
    from imageci.cli.testing import show_event, show_held, show_outcome, show_plan, show_status
    from imageci.definitions.durations import duration_arg
    from imageci.errors import UsageError

    session = Session.open()
    if remote_client(session.settings) is not None:
        raise UsageError("imageci rerun repeats the runs of this home; unset IMAGECI_SERVER (or `imageci logout`) "
                         "to use it")
    again = plan_rerun(session, run_id, failed=failed, testbeds=testbed, jobs=jobs)
    if again.plan is None:
        console.print(f"nothing failed in run {run_id}: nothing to re-run", highlight=False)
        raise typer.Exit(0)
    hold = hold_duration(duration_arg(hold_on_failure)) if hold_on_failure else None
    plan = replace(again.plan, request=again.plan.request.model_copy(update={"hold": hold}))
    show_plan(plan)
    outcome = execute(session, plan, show_event, show_status, repeats=run_id, on_held=show_held)
    show_outcome(outcome)
    console.print(f"run {outcome.report.run_id} repeats run {run_id}", highlight=False)
    raise typer.Exit(int(outcome.exit_code))
