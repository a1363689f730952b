"""One run as its page shows it: the version it tested, its options, how far
it got (test × testbed pairs with an attempt, of those planned), its attempts,
and the live logs of the jobs still running."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from imageci.app import access, livelogs, queries
from imageci.app.access import LOCAL, Principal
from imageci.app.session import Session
from imageci.reports.reproducer import recorded_reproducer
from imageci.store import lookups
from imageci.verdicts import Verdict


class RunView(BaseModel):
    run: int
    image: str  # NAME@SERIAL
    digest: str
    architecture: str | None
    status: str
    exit_code: int | None
    actor: str
    started: str
    ended: str | None
    options: dict[str, Any]
    planned: int  # test × testbed pairs
    done: int  # … with at least one attempt
    counts: dict[str, int]  # attempts by verdict
    attempts: list[queries.AttemptRow]
    live: list[livelogs.LiveLog]
    repeats: int | None = None  # the run this one repeats (``imageci rerun``)
    repeated_by: list[int] = []  # the runs that repeat it


def run_view(session: Session, run_id: int, *, viewer: Principal = LOCAL) -> RunView:
    found = queries.run(session, run_id, viewer=viewer)  # unknown and unseen runs raise alike
    info = lookups.run_of(session.reader, run_id)
    assert info is not None
    options = json.loads(info[0].options or "{}")
    options = options if isinstance(options, dict) else {}
    row = found.runs[0] if found.runs else None
    tests, beds = options.get("tests") or [], options.get("testbeds") or []
    pairs = {(a.test, a.testbed) for a in found.attempts}
    counts = {v.value: 0 for v in Verdict}
    for a in found.attempts:
        counts[a.verdict] = counts.get(a.verdict, 0) + 1
    return RunView(run=run_id, image=found.image, digest=found.digest, architecture=found.architecture,
                   status=info[0].status, exit_code=info[0].exit_code, actor=info[0].actor,
                   started=row.started if row else info[0].started_at.isoformat(timespec="seconds"),
                   ended=row.ended if row else None, options=options,
                   planned=max(len(tests) * max(len(beds), 1), len(pairs)), done=len(pairs), counts=counts,
                   attempts=found.attempts,
                   live=livelogs.logs(session, run_id, viewer=viewer) if info[0].status == "running" else [],
                   repeats=row.repeats if row else None, repeated_by=row.repeated_by if row else [])


def reproducer(session: Session, run_id: int, server: str, *, viewer: Principal = LOCAL) -> str:
    """The run's ``reproduce.sh`` against ``server``, from what the catalog recorded of it."""
    view = run_view(session, run_id, viewer=viewer)
    return recorded_reproducer(run_id, view.image, view.digest, view.options, server)


class RunSummary(BaseModel):
    run: int
    status: str
    exit_code: int | None
    actor: str
    started: str
    ended: str | None


def runs(session: Session, ref: str, *, viewer: Principal = LOCAL) -> list[RunSummary]:
    """The runs against the bytes of the version ``ref`` names, newest first (without their attempts)."""
    version = access.resolve(session.reader, viewer, ref)
    return [RunSummary(run=r.id, status=r.status, exit_code=r.exit_code, actor=r.actor,
                       started=r.started_at.isoformat(timespec="seconds"),
                       ended=r.ended_at.isoformat(timespec="seconds") if r.ended_at else None)
            for r in reversed(lookups.runs(session.reader, version.digest))]
