"""build → publish to testing → test on the gate's testbeds → promote when the gate holds.

One workflow, on this home or with a server: with a server (``Server``, an
``ApiClient``) the version is built here, published there, tested here with
every attempt recorded there, and the server judges the gate on its evidence
and promotes. ``test_via`` is the same for a version already on a server
(``imageci run``/``test`` with ``--server``). Both answer with the same
outcome, so every interface prints them one way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from imageci.app import notify
from imageci.app.building import build
from imageci.app.consumerruns import ConsumerOrigin
from imageci.app.gating import PromoteArgs, PromoteRequest, gate, gate_op, promote, promote_op
from imageci.app.mirroring import Origin, fetch, portable_reproducer, report
from imageci.app.operations import RefArgs
from imageci.app.planning import TestRequest
from imageci.app.publishing import Destination, Published, push
from imageci.app.servedreference import told_by_server
from imageci.app.session import Session
from imageci.app.testing import AttemptFn, PlanFn, RunOutcome, run_tests
from imageci.app.versions import gate_of, suite_dir_of
from imageci.build.service import BuildResult
from imageci.definitions.image import load_definition
from imageci.errors import GateRefused, UsageError
from imageci.exitcodes import ExitCode
from imageci.store.models import State, Version, label

StepFn = Callable[[str], None]  # what the workflow is doing now ("fetching X from URL…")


class Server(Destination, Origin, ConsumerOrigin, Protocol):
    """A server that takes the version, its results, and decides its promotion (``ApiClient``)."""


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
    image: str  # NAME@SERIAL as judged: here, or on the server
    server: str | None = None  # the server's URL (None: this home)
    published: Published | None = None  # on the server
    recorded: int | None = None  # the run's id on the server
    promoted: bool = False
    retired: list[str] = field(default_factory=list)  # versions that left stable for it
    refused: str | None = None  # why it was not promoted (the gate's explanation)
    interrupted: bool = False
    already_stable: bool = False

    @property
    def exit_code(self) -> ExitCode:
        return pipeline_exit(self.run.exit_code, promoted=self.promoted, already_stable=self.already_stable)


def _test_request(session: Session, request: TestRequest, version: Version, ref: str) -> TestRequest:
    g = gate_of(version)
    assert g is not None  # the definition just stored with it has a tests section
    return request.model_copy(update={"ref": ref, "testbeds": request.testbeds or list(g.testbeds),
                                      "suite": suite_dir_of(session, version)})


def _build(session: Session, definition: Path, request: TestRequest, force_build: bool,
           on_build_line: StepFn | None, on_built: Callable[[BuildResult], None] | None) -> BuildResult:
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


@dataclass
class Hooks:
    """What an interface shows while the workflow runs."""

    on_build_line: StepFn | None = None
    on_built: Callable[[BuildResult], None] | None = None
    on_plan: PlanFn | None = None
    on_event: AttemptFn | None = None
    on_step: StepFn | None = None

    def step(self, what: str) -> None:
        if self.on_step is not None:
            self.on_step(what)


def pipeline(session: Session, definition: Path, request: TestRequest, *, force_build: bool = False,
             server: Server | None = None, url: str | None = None, hooks: Hooks | None = None) -> PipelineOutcome:
    """``request`` gives the test options (its ``ref`` is ignored: the version just built is tested);
    without ``testbeds`` the gate's testbeds are used. ``request.suite`` is recorded as the version's
    suite (the gate judges it); DEP-8 trees and structure or testinfra files run next to the suite.
    Promotes when the gate holds: here, or on ``server`` (at ``url``) on its evidence."""
    hooks = hooks or Hooks()
    built = _build(session, definition, request, force_build, hooks.on_build_line, hooks.on_built)
    if server is not None:
        return _pipeline_via(session, server, url or "", built, request, hooks)
    ref = label(built.version)
    ran = run_tests(session, _test_request(session, request, built.version, ref), on_plan=hooks.on_plan,
                    on_event=hooks.on_event)
    outcome = PipelineOutcome(built, ran, image=ref)
    if ran.exit_code == ExitCode.INTERRUPTED:
        outcome.interrupted = True
        return outcome
    version = session.catalog.resolve(ref)
    judged = gate(session, version, quarantine=request.quarantine)
    if version.state == State.STABLE:
        outcome.already_stable = True
    elif judged is not None and judged.holds:
        try:  # judged again, on the results there when it commits
            done = promote(session, ref, quarantine=request.quarantine)
            outcome.promoted, outcome.retired = True, [label(v) for v in done.retired]
        except GateRefused:
            again = gate(session, session.catalog.resolve(ref), quarantine=request.quarantine)
            outcome.refused = again.explain() if again is not None else "no gate is defined for this image"
    else:
        outcome.refused = judged.explain() if judged is not None else "no gate is defined for this image"
        if judged is not None:
            notify.promotion_blocked(session.settings, version, judged.explain())
    return outcome


def _pipeline_via(session: Session, server: Server, url: str, built: BuildResult, request: TestRequest,
                  hooks: Hooks) -> PipelineOutcome:
    hooks.step(f"publishing {label(built.version)} on {url}…")
    published = push(session, label(built.version), server)
    ran, recorded, _image = test_via(session, server, url, request.model_copy(update={"ref": published.image}), hooks,
                             gate_testbeds=True)
    outcome = PipelineOutcome(built, ran, image=published.image, server=url, published=published,
                              recorded=recorded)
    if ran.exit_code == ExitCode.INTERRUPTED:
        outcome.interrupted = True
        return outcome
    status = server.call(gate_op, RefArgs(ref=published.image))
    if status.state == State.STABLE:
        outcome.already_stable = True
    elif status.holds:
        try:
            done = server.call(promote_op, PromoteArgs(ref=published.image, body=PromoteRequest()))
            outcome.promoted, outcome.retired = True, done.retired
        except GateRefused as exc:
            outcome.refused = str(exc)
    else:
        outcome.refused = status.explanation
        lines = status.explanation.splitlines()
        notify.notify(session.settings, "promotion-blocked", published.image, built.version.product.name,
                      status.digest, f"{published.image} was not promoted: {lines[0]}",
                      [ln.strip() for ln in lines[1:]])
    return outcome


def test_via(session: Session, server: Server, url: str, request: TestRequest, hooks: Hooks | None = None, *,
             gate_testbeds: bool = False) -> tuple[RunOutcome, int, str]:
    """Test the server's version ``request.ref`` here: fetched into this home (only the artifacts it lacks),
    every test run (no reuse of a local pass: the server records what ran for it), the server's consumers
    too, then the run and every attempt recorded there. ``gate_testbeds``: without ``testbeds``, the
    gate's. Returns the run here, its id on the server and the version's NAME@SERIAL there."""
    if (request.executor or session.settings.executor) == "celery":
        raise UsageError(f"--executor celery runs on the server's machine, with its home (workers record into "
                         f"its catalog); against {url} the tests run here (--executor local)")
    hooks = hooks or Hooks()
    hooks.step(f"fetching {request.ref} from {url}…")
    detail, local = fetch(session, server, request.ref)
    if gate_testbeds:
        request = _test_request(session, request, session.catalog.resolve(local), local)
    ran = run_tests(session, request.model_copy(update={"ref": local, "rerun_all": True}), on_plan=hooks.on_plan,
                    on_event=hooks.on_event, consumers_from=server)
    ran.reproducer = portable_reproducer(session, ran, detail, url)
    hooks.step(f"recording the run on {url}…")
    ended = report(session, server, detail, ran.report.run_id, int(ran.exit_code))
    told_by_server(session, server, f"{detail.name}@{detail.version}", ran, hooks.step)
    return ran, ended.run, f"{detail.name}@{detail.version}"
