"""Read-only views of the catalog: images, results, events, flaky tests.
Rows are Pydantic models: the CLI prints them, ``--json`` dumps them, the API
will serve them as they are. They read through ``Session.reader`` and
``store.lookups`` (plain SQL; no ORM import on an up-to-date SQLite catalog),
so a query command answers without loading SQLAlchemy."""

from __future__ import annotations

import functools
import gc
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field

from imageci.app import access, regressions
from imageci.app.access import LOCAL, Principal
from imageci.app.operations import Args, RefArgs, RunArgs, operation
from imageci.app.session import Session
from imageci.checks.findings import KINDS, decoded
from imageci.errors import UnknownReferenceError, UsageError
from imageci.formats.lxdform import feed_state
from imageci.store import lookups
from imageci.store.blobs import CorruptBlobError
from imageci.store.lookups import AttemptInfo, VersionInfo
from imageci.store.states import channels_of

F = TypeVar("F", bound=Callable[..., Any])
_paused = 0
_pause_lock = threading.Lock()
_was_enabled = True


@contextmanager
def rows_in_bulk() -> Iterator[None]:
    """A query builds many small rows, none in a cycle; the cyclic collector's passes over them cost
    more than the query (``flaky`` over 20,000 transient failures: 1.0 s with them, 0.36 s without),
    so it is paused while any query builds its rows (threads share the pause; the last one out
    restores it)."""
    global _paused, _was_enabled
    with _pause_lock:
        if _paused == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _pause_lock:
            _paused -= 1
            if _paused == 0 and _was_enabled:
                gc.enable()


class Row(BaseModel):
    # A model's validator is built when it is first used: a query command pays only for its own rows.
    model_config = ConfigDict(defer_build=True)


class ImageRow(Row):
    name: str
    namespace: str
    public: bool  # readable without a token
    version: str
    state: str
    channels: list[str]
    digest: str  # sha256:<hex>
    created: str  # ISO 8601, seconds
    size: int  # bytes of the rootfs
    lxd_feed: str = "listed"  # on its channel's LXD feed, or why not ("not listed: no /sbin/init …")


def bulk(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with rows_in_bulk():
            return fn(*args, **kwargs)

    return cast(F, wrapper)


@bulk
def images(session: Session, name: str | None = None, *, viewer: Principal = LOCAL) -> list[ImageRow]:
    """Every version (of ``name``) ``viewer`` may see, its state and the channels it is on."""
    found = [(v, size) for v, size in lookups.versions(session.reader, name)
             if viewer.sees(v.namespace, v.public, v.state)]
    if name and not found:
        access.resolve(session.reader, viewer, name)  # raises (with close names for the local operator)
    lxd = lookups.lxd_infos(session.reader, name)
    return [ImageRow(name=v.name, namespace=v.namespace, public=v.public, version=v.serial, state=v.state,
                     channels=channels_of(v.state),
                     digest=f"sha256:{v.digest}", created=v.created_at.isoformat(timespec="seconds"), size=size,
                     lxd_feed=feed_state(lxd.get(v.id)))
            for v, size in found]


class ArtifactRow(Row):
    kind: str
    filename: str
    digest: str  # sha256:<hex>
    size: int


def artifacts(session: Session, ref: str, *, viewer: Principal = LOCAL) -> list[ArtifactRow]:
    """The artifacts of the version ``ref`` names."""
    return _artifacts(session, access.resolve(session.reader, viewer, ref).id)


def _artifacts(session: Session, version_id: int) -> list[ArtifactRow]:
    return [ArtifactRow(kind=a.kind, filename=a.filename, digest=f"sha256:{a.digest}", size=a.size)
            for a in lookups.artifacts(session.reader, version_id)]


def artifact_row(session: Session, ref: str, filename: str, *, viewer: Principal = LOCAL) -> ArtifactRow:
    """One artifact of a version."""
    found = [a for a in artifacts(session, ref, viewer=viewer) if a.filename == filename]
    if not found:
        raise UnknownReferenceError(f"{ref} has no artifact {filename[:100]!r}")
    return found[0]



class VersionDetail(Row):
    name: str
    version: str  # serial
    digest: str  # sha256:<hex>
    state: str
    namespace: str
    architecture: str
    definition: str | None  # the image definition it was built from (its tests, gate, keep)
    artifacts: list[ArtifactRow]
    build_info: dict[str, Any] = {}  # how it was built (builder, mirror, command, …) or imported
    created: str = ""  # ISO 8601, seconds


def version_detail(session: Session, ref: str, *, viewer: Principal = LOCAL) -> VersionDetail:
    """Everything a client needs to test the version ``ref`` names elsewhere."""
    v = access.resolve(session.reader, viewer, ref)
    definition = lookups.definition(session.reader, v.id)
    info = json.loads(lookups.build_info(session.reader, v.id) or "{}")
    return VersionDetail(name=v.name, version=v.serial, digest=f"sha256:{v.digest}", state=v.state,
                         namespace=v.namespace, architecture=v.architecture, definition=definition,
                         artifacts=_artifacts(session, v.id), build_info=info if isinstance(info, dict) else {},
                         created=v.created_at.isoformat(timespec="seconds"))


class MachineFinding(BaseModel):
    """One of the machine's own complaints in an attempt's window (``checks.complaints``)."""

    kind: Literal["oops", "coredump", "failed-unit", "denial"]
    text: str = Field(max_length=1000)


class AttemptRow(Row):
    run: int
    test: str
    testbed: str
    attempt: int
    verdict: str
    exit_code: int | None
    reason: str
    duration: float  # seconds
    started: str
    log: str | None  # path of the log blob in the store
    worker: str | None = None  # the Celery worker that ran it (None: the process that recorded the run)
    change: str | None = None  # on a testing version, against stable: regression, always-failed, fixed, new
    known: str | None = None  # the tracker of the known failure its log matched
    findings: list[MachineFinding] = []  # the machine's own complaints in its window


class RunRow(Row):
    run: int
    status: str  # running | finished | interrupted | aborted
    exit_code: int | None
    actor: str
    started: str
    ended: str | None
    tests: int  # planned
    attempts: int  # recorded (of the attempts shown)
    reference_for: str | None = None  # a reference run: the testing version (NAME@SERIAL) whose failures it ran
    repeats: int | None = None  # the run this one repeats (``imageci rerun``)
    repeated_by: list[int] = []  # the runs that repeat this one


class Results(Row):
    image: str  # NAME@SERIAL
    digest: str
    state: str
    architecture: str | None = None  # the image's (None: from a server before it was reported)
    runs: list[RunRow]
    attempts: list[AttemptRow]
    reference: str | None = None  # the stable version (NAME@SERIAL) a testing version's verdicts are told against


def _findings(text: str | None) -> list[MachineFinding]:
    return [MachineFinding(kind=f.kind, text=f.text) for f in decoded(text)  # type: ignore[arg-type]
            if f.kind in KINDS]


@bulk
def results(session: Session, ref: str, tests: list[str] | None = None, *, viewer: Principal = LOCAL) -> Results:
    """Every recorded attempt for a version (only ``tests``, when given) and the runs they belong to."""
    version = access.resolve(session.reader, viewer, ref)
    every = lookups.attempts(session.reader, version.digest)
    attempts = [a for a in every if not tests or a.test_id in tests]
    if tests:
        known = {a.test_id for a in every}
        unknown = [t for t in tests if t not in known]
        if unknown:
            raise UsageError(f"no results for {', '.join(unknown)} on {version.label}; "
                             f"tests with results: {', '.join(sorted(known)) or 'none'}")
    told = regressions.reference_for(session, version)
    rows = [AttemptRow(run=a.run_id, test=a.test_id, testbed=a.testbed, attempt=a.attempt, verdict=a.verdict,
                       exit_code=a.exit_code, reason=a.reason,
                       duration=round((a.ended_at - a.started_at).total_seconds(), 3),
                       started=a.started_at.isoformat(timespec="seconds"),
                       log=str(session.store.path(a.log_digest)) if a.log_digest else None, worker=a.worker,
                       change=told.change((a.test_id, a.testbed, a.test_digest), [a.verdict]) if told else None,
                       known=a.known, findings=_findings(a.findings))
            for a in attempts]
    per_run: dict[int, int] = {}
    for a in attempts:
        per_run[a.run_id] = per_run.get(a.run_id, 0) + 1
    every_run = lookups.runs(session.reader, version.digest)
    repeated_by: dict[int, list[int]] = {}
    for o in every_run:
        if o.repeats is not None:
            repeated_by.setdefault(o.repeats, []).append(o.id)
    runs = [RunRow(run=r.id, status=r.status, exit_code=r.exit_code, actor=r.actor,
                   started=r.started_at.isoformat(timespec="seconds"),
                   ended=r.ended_at.isoformat(timespec="seconds") if r.ended_at else None,
                   tests=len(json.loads(r.options).get("tests", [])), attempts=per_run.get(r.id, 0),
                   reference_for=json.loads(r.options).get(regressions.REFERENCE_OPTION), repeats=r.repeats,
                   repeated_by=repeated_by.get(r.id, []))
            for r in every_run if not tests or r.id in per_run]
    return Results(image=version.label, digest=f"sha256:{version.digest}", state=version.state,
                   architecture=version.architecture, runs=runs, attempts=rows,
                   reference=told.label if told else None)


def run(session: Session, run_id: int, *, viewer: Principal = LOCAL) -> Results:
    """One run: its version, its status and every attempt it recorded (``results`` of that run only)."""
    found = lookups.run_of(session.reader, run_id)
    version = found[2] if found else None
    if found is None or version is None or not viewer.sees(version.namespace, version.public, version.state):
        raise UnknownReferenceError(f"no run {run_id}")
    every = results(session, version.label, viewer=viewer)
    return every.model_copy(update={"runs": [r for r in every.runs if r.run == run_id],
                                    "attempts": [a for a in every.attempts if a.run == run_id]})


def find_attempt(session: Session, ref: str, test: str, *, run: int | None = None, attempt: int | None = None,
                 testbed: str | None = None, viewer: Principal = LOCAL) -> tuple[VersionInfo, AttemptInfo]:
    """The version ``ref`` names and the attempt of ``test`` on it: its latest, or the one ``run``,
    ``attempt`` and ``testbed`` pick."""
    version = access.resolve(session.reader, viewer, ref)
    found = [a for a in lookups.attempts(session.reader, version.digest)
             if a.test_id == test and (run is None or a.run_id == run) and (attempt is None or a.attempt == attempt)
             and (testbed is None or a.testbed == testbed)]
    where = "".join([f" on {testbed}" if testbed else "", f" in run {run}" if run is not None else "",
                     f" (attempt {attempt})" if attempt else ""])
    if not found:
        raise UnknownReferenceError(f"no attempt of {test!r} on {version.label}{where}")
    return version, found[-1]


def log_path(session: Session, ref: str, test: str, *, run: int | None = None, attempt: int | None = None,
             viewer: Principal = LOCAL) -> Path:
    """The stored log of test ``test`` on the version ``ref`` names: of its latest attempt, or of the
    one ``run`` and ``attempt`` pick."""
    _version, latest = find_attempt(session, ref, test, run=run, attempt=attempt, viewer=viewer)
    return stored_log(session, latest)


def stored_log(session: Session, found: AttemptInfo) -> Path:
    """Where an attempt's log is in the store; why not, as an error."""
    if found.log_digest is None:
        raise UnknownReferenceError(f"attempt {found.attempt} of {found.test_id!r} in run {found.run_id} kept no log")
    path = session.store.path(found.log_digest)
    if not path.is_file():
        raise CorruptBlobError(f"the log sha256:{found.log_digest} is missing from the store")
    return path


class EventRow(Row):
    at: datetime
    event: str  # "testing → stable", "run 3 started", "run 3 aborted"
    actor: str
    reason: str


RUN_ENDINGS = {"aborted": "the imageci process running it died (killed or crashed)",
               "interrupted": "Ctrl-C / SIGTERM"}


@bulk
def events(session: Session, ref: str, *, viewer: Principal = LOCAL) -> list[EventRow]:
    """The audit trail of a version: state changes, runs and pushes, oldest first."""
    version = access.resolve(session.reader, viewer, ref)
    rows = [EventRow(at=e.at, event=f"{e.from_state or '-'} → {e.to_state}", actor=e.actor, reason=e.reason)
            for e in lookups.events(session.reader, version.id)]
    rows += [EventRow(at=p.at, event=f"pushed to {p.destination}", actor=p.actor, reason=p.manifest_digest)
             for p in lookups.pushes(session.reader, version.id)]
    for r in lookups.runs(session.reader, version.digest):
        rows.append(EventRow(at=r.started_at, event=f"run {r.id} started", actor=r.actor, reason=""))
        if r.ended_at is not None:
            exit_note = f"exit {r.exit_code}" if r.exit_code is not None else ""
            why = "; ".join(x for x in (exit_note, RUN_ENDINGS.get(r.status, "")) if x)
            rows.append(EventRow(at=r.ended_at, event=f"run {r.id} {r.status}", actor=r.actor, reason=why))
    return sorted(rows, key=lambda row: row.at)


class ImagesArgs(Args):
    name: str | None = Field(default=None, description="only this product")


class ResultsArgs(RefArgs):
    test: list[str] | None = Field(default=None, description="only these tests")


@operation("GET", "/images", request=ImagesArgs, answer=list[ImageRow], tag="images")
def images_op(session: Session, req: ImagesArgs, by: Principal) -> list[ImageRow]:
    """Every version the caller may see (of product ``name``): state, channels, digest."""
    return images(session, req.name, viewer=by)


@operation("GET", "/images/{ref}/results", request=ResultsArgs, answer=Results, tag="images")
def results_op(session: Session, req: ResultsArgs, by: Principal) -> Results:
    """Every recorded attempt for a version (only the ``test`` ones, when given) and their runs; each
    attempt's ``log`` is the URL of its log here."""
    return results(session, req.ref, req.test, viewer=by)


@operation("GET", "/images/{ref}/events", request=RefArgs, answer=list[EventRow], tag="images")
def events_op(session: Session, req: RefArgs, by: Principal) -> list[EventRow]:
    """A version's audit trail: state changes and runs, oldest first."""
    return events(session, req.ref, viewer=by)


@operation("GET", "/images/{ref}", request=RefArgs, answer=VersionDetail, tag="images", name="version")
def version_op(session: Session, req: RefArgs, by: Principal) -> VersionDetail:
    """One version: digest, state, namespace, architecture, definition, artifacts."""
    return version_detail(session, req.ref, viewer=by)


@operation("GET", "/images/{ref}/artifacts", request=RefArgs, answer=list[ArtifactRow], tag="images")
def artifacts_op(session: Session, req: RefArgs, by: Principal) -> list[ArtifactRow]:
    """A version's artifacts: kind, file name, sha256, size."""
    return artifacts(session, req.ref, viewer=by)


@operation("GET", "/runs/{run_id}", request=RunArgs, answer=Results, tag="runs", name="run")
def run_op(session: Session, req: RunArgs, by: Principal) -> Results:
    """One run: its version, status, and every attempt it recorded."""
    return run(session, req.run_id, viewer=by)


class RunsArgs(Args):
    name: str = Field(min_length=1, max_length=63, description="the product")
    limit: int = Field(default=20, ge=1, le=1000, description="the newest this many")


class ProductRun(RunRow):
    image: str  # NAME@SERIAL


@operation("GET", "/runs", request=RunsArgs, answer=list[ProductRun], tag="runs")
def runs_op(session: Session, req: RunsArgs, by: Principal) -> list[ProductRun]:
    """The newest runs of a product's versions the caller may see, newest first: the version, status,
    exit code, who ran it and when."""
    found = [(v, r) for v, _size in lookups.versions(session.reader, req.name)
             if by.sees(v.namespace, v.public, v.state) for r in lookups.runs(session.reader, v.digest)]
    if not found:
        access.resolve(session.reader, by, req.name)  # unknown (or unseen): said as for any reference
    newest = sorted(found, key=lambda vr: vr[1].id, reverse=True)[:req.limit]
    return [ProductRun(image=v.label, run=r.id, status=r.status, exit_code=r.exit_code, actor=r.actor,
                       started=r.started_at.isoformat(timespec="seconds"),
                       ended=r.ended_at.isoformat(timespec="seconds") if r.ended_at else None,
                       tests=len(json.loads(r.options).get("tests", [])), attempts=0) for v, r in newest]
