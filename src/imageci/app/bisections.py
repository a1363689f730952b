"""Bisections as a service: started over the API (``POST /images/{ref}/bisections``: checked at once, then
carried out in the background of the server, its steps on the server's executor — its Celery workers
when ``IMAGECI_EXECUTOR=celery``), and the bisections kept for a version, each ``running`` until its finding
(one whose process died is told ``aborted``)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from pydantic import Field

from imageci.app import access
from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.bisect import BisectArgs, BisectRequest, BisectResult, begin, carry_out, target
from imageci.app.operations import RefArgs, operation
from imageci.app.session import Session
from imageci.config import Settings
from imageci.errors import ImageciError
from imageci.owners import lock_alive

log = logging.getLogger("imageci.bisect")
_threads: set[threading.Thread] = set()  # bisections this process carries out now


class BisectionsArgs(RefArgs):
    test: str | None = Field(default=None, max_length=255, description="only this test's")


class BisectStartArgs(RefArgs):
    body: BisectRequest


@operation("GET", "/images/{ref}/bisections", request=BisectionsArgs, answer=list[BisectResult], tag="images")
def bisections_op(session: Session, req: BisectionsArgs, by: Principal) -> list[BisectResult]:
    """The bisections kept for a version (of one test), oldest first: each finding (``running`` until it
    ends), culprit and step."""
    return bisections(session, req.ref, req.test, viewer=by)


@operation("POST", "/images/{ref}/bisections", request=BisectStartArgs, answer=BisectResult, tag="images",
           status=202, needs_token=True, name="bisect")
def bisect_op(session: Session, req: BisectStartArgs, by: Principal) -> BisectResult:
    """Start bisecting a test that fails on the version (scope ``test``): the request is checked at once
    (the test, the testbed, the good end), then the bisection runs on the server — its steps as jobs on its
    workers when its executor is ``celery`` — and this answers with it ``running``; read it back from
    ``GET /images/{ref}/bisections``. A bisection of the same test of the version still running is
    answered instead of a second one."""
    version = access.resolve(session.reader, by, req.ref)
    by.require(Scope.TEST, version.namespace, f"bisect tests of {version.label}")
    running = [b for b in bisections(session, version.label, req.body.test, viewer=by) if b.finding == "running"]
    if running:
        return running[-1]
    args = BisectArgs(ref=version.label, **req.body.model_dump())
    t = target(session, args)
    begun = begin(session, t, actor=None if by == LOCAL else by.name)
    thread = threading.Thread(target=_carry_out, args=(session.settings, args, begun), daemon=True,
                              name=f"imageci-bisect-{begun.id}")
    _threads.add(thread)
    thread.start()
    return begun


def _carry_out(settings: Settings, args: BisectArgs, begun: BisectResult) -> None:
    """A started bisection, in its own session (the request's ends with the request)."""
    session = Session.open(settings)
    try:
        carry_out(session, target(session, args), begun)
    except ImageciError as exc:
        log.warning("bisection %s: %s", begun.id, exc)
    except Exception:  # a thread's last word: the finding ("error") is kept, the traceback logged
        log.exception("bisection %s failed", begun.id)
    finally:
        session.close()
        _threads.discard(threading.current_thread())


def bisections(session: Session, ref: str, test: str | None = None, *,
               viewer: Principal = LOCAL) -> list[BisectResult]:
    info = access.resolve(session.reader, viewer, ref)
    rows = session.catalog.bisections(info.id, test)
    if any(r.finding == "running" for r in rows) and session.catalog.abort_dead_bisections(
            lambda owner: lock_alive(Path(owner))):
        rows = session.catalog.bisections(info.id, test)
    out = []
    for row in rows:
        result = BisectResult.model_validate(json.loads(row.result))
        result.id = row.id
        out.append(result)
    return out
