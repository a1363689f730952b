"""A version tested here and recorded on a server (``pipeline.test_via``): its verdicts told against the
server's stable version as the server tells them (``GET /images/{ref}/references``). A failing test the
server has no verdict of on its stable version runs here on that version (fetched from the server) and is
recorded there as a reference run — as a local run does on its own home (``testing``). With
``investigate``, each regression is then bisected on the server."""

from __future__ import annotations

import logging
from collections.abc import Callable

from imageci.app.bisect import BisectRequest
from imageci.app.bisections import BisectStartArgs, bisect_op
from imageci.app.mirroring import Origin, fetch, report
from imageci.app.operations import RefArgs
from imageci.app.regressions import REFERENCE_OPTION, ReferenceState, references_op
from imageci.app.session import Session
from imageci.app.testing import RunOutcome, execute, investigating, reference_plan, write_reports
from imageci.errors import ImageciError
from imageci.policy.reference import Change

log = logging.getLogger("imageci.test")


def told_by_server(session: Session, server: Origin, tested: str, ran: RunOutcome, step: Callable[[str], None]) -> None:
    """Set each result's change of ``ran`` (recorded on ``server`` as its version ``tested``) as the server
    tells it, after a reference run where it lacks one; the run's reports are written again with them."""
    state = server.call(references_op, RefArgs(ref=tested))
    ours = {(c.id, tb, c.digest) for c in ran.plan.checks for tb in ran.plan.testbeds}
    missing = [k for k in ((n.test, n.testbed, n.test_digest) for n in state.needed) if k in ours]
    if missing and state.reference is not None:
        step(f"reference run on {state.reference}: {len({t for t, _b, _d in missing})} test(s) that failed here "
             "and never ran there…")
        detail, local = fetch(session, server, state.reference)
        base = execute(session, reference_plan(session, ran.plan, local, missing), reports=False,
                       options={REFERENCE_OPTION: tested})
        report(session, server, detail, base.report.run_id, int(base.exit_code))
        ran.baseline = base
        state = server.call(references_op, RefArgs(ref=tested))
    _apply(state, ran)
    write_reports(session, ran.plan.request, ran.report)
    if state.reference is not None:
        _investigate(server, tested, state.reference, ran)


def _apply(state: ReferenceState, ran: RunOutcome) -> None:
    told = {(c.test, c.testbed, c.test_digest): c for c in state.changes}
    for r in ran.report.results:
        change = told.get((r.test_id, r.testbed, r.check.digest))
        r.change, r.change_why = (change.change, change.why) if change is not None else ("", "")
    ran.reference = state.reference


def _investigate(server: Origin, tested: str, reference: str, ran: RunOutcome) -> None:
    """Each regression bisected on the server (``investigate``): started there, carried out in its background."""
    if not investigating(ran.plan):
        return
    for r in ran.report.results:
        if r.change != Change.REGRESSION:
            continue
        body = BisectRequest(test=r.test_id, testbed=r.testbed, good=reference,
                             budget=ran.plan.request.investigate_budget)
        try:
            ran.investigated.append(server.call(bisect_op, BisectStartArgs(ref=tested, body=body)))
        except ImageciError as exc:
            log.warning("not bisected: %s on %s: %s", r.test_id, r.testbed, exc)
