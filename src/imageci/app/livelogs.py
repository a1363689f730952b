"""A running job's log as it is written. A worker appends what its test prints
while it runs; the server keeps it, bounded, in the catalog's ``live_logs``
(so every replica of the server appends to and serves the same log; the
attempt's log, in the store, is the record) until the run has ended a while;
anyone who may read the run follows it (``imageci log REF TEST --follow``,
``GET /runs/{id}/live``).

An append names the offset it starts at, so a retried request is written
once; an append past the end is refused with the size the server has, and
the worker sends from there.
"""

from __future__ import annotations

import hashlib
import re
import time

from pydantic import BaseModel, Field

from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.operations import RunArgs, operation
from imageci.app.session import Session
from imageci.errors import UnknownReferenceError, UsageError
from imageci.store import lookups
from imageci.store.states import LiveMeta, RunStatus

MAX_LIVE = 4 << 20  # bytes of one job's live log; the attempt's log has the rest (head and tail)
MAX_CHUNK = 1 << 20
GRACE = 120.0  # seconds an ended run's live logs stay after their last write
KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
CUT = "\n[imageci: the live log stops here ({} bytes); the attempt's log keeps its head and tail]\n"


class LiveChunk(BaseModel):
    key: str = Field(description="the job's idempotency key")
    test: str = Field(min_length=1, max_length=255)
    testbed: str = Field(min_length=1, max_length=64)
    worker: str | None = Field(default=None, max_length=255)
    offset: int = Field(ge=0, le=MAX_LIVE)
    data: str = Field(max_length=MAX_CHUNK)


class LiveAppended(BaseModel):
    size: int  # bytes the server has: the next append starts there
    accepted: bool  # False: the offset was past the end (send from ``size``), or the run ended


class LiveLog(BaseModel):
    key: str
    test: str
    testbed: str
    worker: str | None
    size: int
    updated: float  # when it last grew (Unix time)


def _name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _run(session: Session, run_id: int, by: Principal, scope: Scope | None) -> str:
    """The run's status, if ``by`` may see it (and has ``scope`` in its namespace)."""
    found = lookups.run_of(session.reader, run_id)
    version = found[2] if found else None
    if found is None or version is None or not by.sees(version.namespace, version.public, version.state):
        raise UnknownReferenceError(f"no run {run_id}")
    if scope is not None:
        by.require(scope, version.namespace, f"write live logs of run {run_id}")
    return found[0].status


def append(session: Session, run_id: int, chunk: LiveChunk, *, by: Principal = LOCAL) -> LiveAppended:
    """Append ``chunk`` to its job's live log (scope ``test``); nothing once the run ended."""
    if not KEY.fullmatch(chunk.key):
        raise UsageError("a live log's key is 8 to 128 letters, digits, '.', '_', ':' or '-'")
    if _run(session, run_id, by, Scope.TEST) != RunStatus.RUNNING.value:
        return LiveAppended(size=0, accepted=False)
    meta = LiveMeta(chunk.key, chunk.test, chunk.testbed, chunk.worker)
    size, accepted = session.catalog.live_append(run_id, _name(chunk.key), meta, chunk.offset, chunk.data.encode(),
                                                 MAX_LIVE, CUT.format(MAX_LIVE).encode())
    return LiveAppended(size=size, accepted=accepted)


def logs(session: Session, run_id: int, *, viewer: Principal = LOCAL) -> list[LiveLog]:
    """The live logs of a run's jobs (an ended run's, until swept: its attempts have the logs)."""
    _run(session, run_id, viewer, None)
    return [LiveLog(key=r.key, test=r.test, testbed=r.testbed, worker=r.worker, size=r.size, updated=r.updated)
            for r in session.catalog.live_logs(run_id)]


def read(session: Session, run_id: int, key: str, offset: int = 0, *, viewer: Principal = LOCAL,
         limit: int = MAX_CHUNK) -> bytes:
    """Bytes of a job's live log from ``offset`` (at most ``limit``); empty when there are no more yet."""
    _run(session, run_id, viewer, None)
    if not KEY.fullmatch(key):
        raise UsageError("a live log's key is 8 to 128 letters, digits, '.', '_', ':' or '-'")
    return session.catalog.live_read(run_id, _name(key), max(0, offset), max(0, min(limit, MAX_CHUNK)))


def sweep(session: Session, grace: float | None = None) -> int:
    """Remove the live logs of runs that ended (their attempts have the logs) and were not written for
    ``grace`` seconds (default ``GRACE``); how many runs'."""
    cutoff = time.time() - (GRACE if grace is None else grace)
    return session.catalog.live_sweep(cutoff, lookups.running_ids(session.reader))


class LiveArgs(RunArgs):
    body: LiveChunk


@operation("POST", "/runs/{run_id}/live", request=LiveArgs, answer=LiveAppended, tag="runs", name="live_append")
def live_append(session: Session, req: LiveArgs, by: Principal) -> LiveAppended:
    """Append what a running job printed to its live log (scope ``test``), from ``offset``: a retried
    append is written once; one past the end is not accepted and says where the log ends. Once the
    run ended nothing is kept (``size`` 0, not accepted)."""
    return append(session, req.run_id, req.body, by=by)


@operation("GET", "/runs/{run_id}/live", request=RunArgs, answer=list[LiveLog], tag="runs", name="live_list")
def live_list(session: Session, req: RunArgs, by: Principal) -> list[LiveLog]:
    """The live logs of a run's jobs (an ended run's for a while: its attempts have the logs)."""
    return logs(session, req.run_id, viewer=by)
