"""build → publish to testing → test on the gate's testbeds → promote when the gate holds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imageci.app.building import build
from imageci.app.gating import gate
from imageci.app.planning import TestRequest
from imageci.app.session import Session
from imageci.app.testing import AttemptFn, PlanFn, RunOutcome, run_tests
from imageci.app.versions import gate_of, keep_of, suite_dir_of
from imageci.build.service import BuildResult
from imageci.definitions.image import load_definition
from imageci.errors import UsageError
from imageci.exitcodes import ExitCode
from imageci.policy.gate import GateResult
from imageci.policy.promote import PromotionResult, promote
from imageci.store.models import State, label


@dataclass
class PipelineOutcome:
    build: BuildResult
    run: RunOutcome
    gate: GateResult | None = None  # None when the run was interrupted
    promotion: PromotionResult | None = None
    already_stable: bool = False

    @property
    def exit_code(self) -> ExitCode:
        code = self.run.exit_code
        if code == ExitCode.INTERRUPTED or self.already_stable or self.promotion is not None:
            return code if code == ExitCode.INTERRUPTED else ExitCode.OK
        return code if code != ExitCode.OK else ExitCode.GATE_REFUSED


def pipeline(session: Session, definition: Path, request: TestRequest, *, force_build: bool = False,
             on_build_line: Callable[[str], None] | None = None, on_built: Callable[[BuildResult], None] | None = None,
             on_plan: PlanFn | None = None, on_event: AttemptFn | None = None) -> PipelineOutcome:
    """``request`` gives the test options (its ``ref`` is ignored: the version just built is tested);
    without ``testbeds`` the gate's testbeds are used. ``request.suite`` is recorded as the version's
    suite (the gate judges it); DEP-8 trees and structure or testinfra files run next to the suite.
    Promotes when the gate holds."""
    loaded = load_definition(definition)
    if loaded.definition.tests is None:
        raise UsageError(f"{definition}: the definition has no 'tests' section; nothing can gate it")
    built = build(session, definition, force=force_build, on_line=on_build_line, suite=request.suite)
    if on_built is not None:
        on_built(built)
    version = built.version
    g = gate_of(version)
    assert g is not None  # the definition just stored with it has a tests section
    ref = label(version)
    request = request.model_copy(update={"ref": ref, "testbeds": request.testbeds or list(g.testbeds),
                                         "suite": suite_dir_of(session, version)})
    ran = run_tests(session, request, on_plan=on_plan, on_event=on_event)
    outcome = PipelineOutcome(built, ran)
    if ran.exit_code == ExitCode.INTERRUPTED:
        return outcome
    version = session.catalog.resolve(ref)
    outcome.gate = gate(session, version, quarantine=request.quarantine)
    if version.state == State.STABLE:
        outcome.already_stable = True
    elif outcome.gate is not None and outcome.gate.holds:
        outcome.promotion = promote(session.catalog, version, outcome.gate, keep=keep_of(version))
    return outcome
