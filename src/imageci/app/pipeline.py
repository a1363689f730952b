"""build → publish to testing → test on the gate's testbeds → promote when the gate holds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from imageci.app import notify
from imageci.app.building import build
from imageci.app.consumers import ConsumerOrigin
from imageci.app.gating import GateStatus, Promotion, gate, promote
from imageci.app.mirroring import Origin, fetch, portable_reproducer, report
from imageci.app.planning import TestRequest
from imageci.app.publishing import Destination, Published, push
from imageci.app.session import Session
from imageci.app.testing import AttemptFn, PlanFn, RunOutcome, run_tests
from imageci.app.versions import gate_of, suite_dir_of
from imageci.build.service import BuildResult
from imageci.definitions.image import load_definition
from imageci.errors import GateRefused, UsageError
from imageci.exitcodes import ExitCode
from imageci.policy.gate import GateResult
from imageci.policy.promote import PromotionResult
from imageci.store.models import State, Version, label


def pipeline_exit(run: ExitCode, *, promoted: bool, already_stable: bool) -> ExitCode:
    """A pipeline's exit code: the run's when it was interrupted or a test failed; 0 once the version is
    stable; 5 when every test passed and the gate still does not hold."""
    if run == ExitCode.INTERRUPTED:
        return run
    if already_stable or promoted:
        return ExitCode.OK
    return run if run != ExitCode.OK else ExitCode.GATE_REFUSED


@dataclass
class PipelineOutcome:
    build: BuildResult
    run: RunOutcome
    gate: GateResult | None = None  # None when the run was interrupted
    promotion: PromotionResult | None = None
    already_stable: bool = False

    @property
    def exit_code(self) -> ExitCode:
        return pipeline_exit(self.run.exit_code, promoted=self.promotion is not None,
                             already_stable=self.already_stable)


def _test_request(session: Session, request: TestRequest, version: Version, ref: str) -> TestRequest:
    g = gate_of(version)
    assert g is not None  # the definition just stored with it has a tests section
    return request.model_copy(update={"ref": ref, "testbeds": request.testbeds or list(g.testbeds),
                                      "suite": suite_dir_of(session, version)})


def _build(session: Session, definition: Path, request: TestRequest, force_build: bool,
           on_build_line: Callable[[str], None] | None, on_built: Callable[[BuildResult], None] | None) -> BuildResult:
    loaded = load_definition(definition)
    if loaded.definition.tests is None:
        raise UsageError(f"{definition}: the definition has no 'tests' section; nothing can gate it")
    if loaded.definition.multiarch:
        raise UsageError(f"{definition}: the pipeline takes a definition of one product, and this one lists "
                         "architectures: `imageci build` it, `imageci test` each NAME-ARCH on hosts or workers "
                         "that run it, then `imageci promote` one (all its architectures move together)")
    [built] = build(session, definition, force=force_build, on_line=on_build_line, suite=request.suite)
    if on_built is not None:
        on_built(built)
    return built


def pipeline(session: Session, definition: Path, request: TestRequest, *, force_build: bool = False,
             on_build_line: Callable[[str], None] | None = None, on_built: Callable[[BuildResult], None] | None = None,
             on_plan: PlanFn | None = None, on_event: AttemptFn | None = None) -> PipelineOutcome:
    """``request`` gives the test options (its ``ref`` is ignored: the version just built is tested);
    without ``testbeds`` the gate's testbeds are used. ``request.suite`` is recorded as the version's
    suite (the gate judges it); DEP-8 trees and structure or testinfra files run next to the suite.
    Promotes when the gate holds."""
    built = _build(session, definition, request, force_build, on_build_line, on_built)
    ref = label(built.version)
    ran = run_tests(session, _test_request(session, request, built.version, ref), on_plan=on_plan,
                    on_event=on_event)
    outcome = PipelineOutcome(built, ran)
    if ran.exit_code == ExitCode.INTERRUPTED:
        return outcome
    version = session.catalog.resolve(ref)
    outcome.gate = gate(session, version, quarantine=request.quarantine)
    if version.state == State.STABLE:
        outcome.already_stable = True
    elif outcome.gate is not None and outcome.gate.holds:
        try:  # judged again, on the results there when it commits
            outcome.promotion = promote(session, ref, quarantine=request.quarantine)
        except GateRefused:
            outcome.gate = gate(session, session.catalog.resolve(ref), quarantine=request.quarantine)
    elif outcome.gate is not None:
        notify.promotion_blocked(session.settings, version, outcome.gate.explain())
    return outcome


class Server(Destination, Origin, ConsumerOrigin, Protocol):
    """A server that takes the version, its results, and decides its promotion (``ApiClient``)."""

    def gate(self, ref: str) -> GateStatus: ...

    def promote(self, ref: str) -> Promotion: ...


@dataclass
class RemotePipelineOutcome:
    build: BuildResult
    published: Published
    run: RunOutcome
    recorded: int | None = None  # the run's id on the server
    gate: GateStatus | None = None
    promotion: Promotion | None = None
    refused: str | None = None  # why the server did not promote
    already_stable: bool = False

    @property
    def exit_code(self) -> ExitCode:
        return pipeline_exit(self.run.exit_code, promoted=self.promotion is not None,
                             already_stable=self.already_stable)


def pipeline_via(session: Session, server: Server, url: str, definition: Path, request: TestRequest, *,
                 force_build: bool = False, on_build_line: Callable[[str], None] | None = None,
                 on_built: Callable[[BuildResult], None] | None = None, on_plan: PlanFn | None = None,
                 on_event: AttemptFn | None = None) -> RemotePipelineOutcome:
    """The pipeline with a server: build here, publish there, test here (recorded there), and let the
    server judge the gate on its evidence and promote."""
    built = _build(session, definition, request, force_build, on_build_line, on_built)
    published = push(session, label(built.version), server)
    detail, local = fetch(session, server, published.image)
    version = session.catalog.resolve(local)
    ran = run_tests(session, _test_request(session, request, version, local).model_copy(update={"rerun_all": True}),
                    on_plan=on_plan, on_event=on_event, consumers_from=server)
    ran.reproducer = portable_reproducer(session, ran, detail, url)
    outcome = RemotePipelineOutcome(built, published, ran)
    outcome.recorded = report(session, server, detail, ran.report.run_id, int(ran.exit_code)).run
    if ran.exit_code == ExitCode.INTERRUPTED:
        return outcome
    outcome.gate = server.gate(published.image)
    if outcome.gate.state == State.STABLE:
        outcome.already_stable = True
    elif outcome.gate.holds:
        try:
            outcome.promotion = server.promote(published.image)
        except GateRefused as exc:
            outcome.refused = str(exc)
    else:
        outcome.refused = outcome.gate.explanation
        lines = outcome.refused.splitlines()
        notify.notify(session.settings, "promotion-blocked", published.image, version.product.name,
                      outcome.gate.digest, f"{published.image} was not promoted: {lines[0]}",
                      [ln.strip() for ln in lines[1:]])
    return outcome
