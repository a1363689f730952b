"""A test's history across the versions of a product: per version its verdict
(the newest run on each testbed, retries aggregated; the worst testbed wins),
pass rate and duration, and where the current failure began: the first bad
version and the last good one before it."""

from __future__ import annotations

import statistics
from datetime import datetime

from pydantic import BaseModel

from imageci.app import access
from imageci.app.access import LOCAL, Principal
from imageci.app.session import Session
from imageci.engine.aggregate import aggregate
from imageci.errors import UnknownReferenceError
from imageci.store import lookups
from imageci.store.lookups import TestAttempt
from imageci.verdicts import Verdict, worst

BAD = (Verdict.FAIL, Verdict.ERROR)


class HistoryPoint(BaseModel):
    image: str  # NAME@SERIAL
    serial: str
    state: str
    created: datetime
    verdict: str
    attempts: int
    passes: int
    pass_rate: float  # passes / attempts
    duration: float  # median seconds of its attempts


class History(BaseModel):
    product: str
    test: str
    points: list[HistoryPoint]  # oldest first (the newest ``limit`` versions that ran it)
    first_bad: str | None  # NAME@SERIAL where the current run of failures began (None: the newest is good)
    last_good: str | None  # the version before it that passed
    failing_since: datetime | None


def _verdict(tries: list[TestAttempt]) -> Verdict:
    newest: dict[str, tuple[int, list[Verdict]]] = {}
    for a in tries:
        run, seen = newest.get(a.testbed, (-1, []))
        if a.run_id != run:
            run, seen = a.run_id, []
        seen.append(Verdict(a.verdict))
        newest[a.testbed] = (run, seen)
    found = worst(aggregate(vs) for _r, vs in newest.values())
    assert found is not None
    return found


def history(session: Session, product: str, test: str, *, viewer: Principal = LOCAL, limit: int = 60) -> History:
    """``test``'s history on the versions of ``product`` that ``viewer`` may see (the newest ``limit``)."""
    access.resolve(session.reader, viewer, product)  # an unknown or unseen product is unknown
    by_serial: dict[str, list[TestAttempt]] = {}
    for a in lookups.test_attempts(session.reader, product, test):
        by_serial.setdefault(a.serial, []).append(a)
    versions = {v.serial: v for v, _size in lookups.versions(session.reader, product)
                if viewer.sees(v.namespace, v.public, v.state)}
    points = []
    for serial, tries in by_serial.items():
        v = versions.get(serial)
        if v is None:
            continue
        passes = sum(1 for a in tries if a.verdict == Verdict.PASS)
        points.append(HistoryPoint(image=v.label, serial=serial, state=v.state, created=v.created_at,
                                   verdict=_verdict(tries).value, attempts=len(tries), passes=passes,
                                   pass_rate=round(passes / len(tries), 4),
                                   duration=round(statistics.median((a.ended_at - a.started_at).total_seconds()
                                                                    for a in tries), 3)))
    if not points:
        raise UnknownReferenceError(f"no results for test {test!r} on {product}")
    first_bad = last_good = None
    since = None
    for p in reversed(points):
        if Verdict(p.verdict) in BAD:
            first_bad, since = p.image, p.created
            continue
        if first_bad is not None and p.verdict in (Verdict.PASS, Verdict.FLAKY):
            last_good = p.image
        break
    return History(product=product, test=test, points=points[-limit:], first_bad=first_bad, last_good=last_good,
                   failing_since=since)
