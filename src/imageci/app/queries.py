"""Read-only views of the catalog: images, results, events, flaky tests.
Rows are Pydantic models: the CLI prints them, ``--json`` dumps them, the API
will serve them as they are."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from pydantic import BaseModel

from imageci.app.session import Session
from imageci.errors import UsageError
from imageci.store.models import CHANNELS, State, as_utc, label, utcnow


class ImageRow(BaseModel):
    name: str
    version: str
    state: str
    channels: list[str]
    digest: str  # sha256:<hex>
    created: str  # ISO 8601, seconds
    size: int  # bytes of the rootfs


def images(session: Session, name: str | None = None) -> list[ImageRow]:
    """Every version (of ``name``), its state and the channels it is on."""
    versions = session.catalog.versions(name)
    if name and not versions:
        session.catalog.resolve(name)  # raises with close names
    return [ImageRow(name=v.product.name, version=v.serial, state=v.state,
                     channels=[c for c, states in CHANNELS.items() if State(v.state) in states],
                     digest=f"sha256:{v.digest}", created=v.created_at.isoformat(timespec="seconds"),
                     size=sum(a.size for a in v.artifacts if a.kind == "rootfs"))
            for v in versions]


class AttemptRow(BaseModel):
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


class RunRow(BaseModel):
    run: int
    status: str  # running | finished | interrupted | aborted
    exit_code: int | None
    actor: str
    started: str
    ended: str | None
    tests: int  # planned
    attempts: int  # recorded (of the attempts shown)


class Results(BaseModel):
    image: str  # NAME@SERIAL
    digest: str
    state: str
    runs: list[RunRow]
    attempts: list[AttemptRow]


def results(session: Session, ref: str, tests: list[str] | None = None) -> Results:
    """Every recorded attempt for a version (only ``tests``, when given) and the runs they belong to."""
    version = session.catalog.resolve(ref)
    attempts = session.catalog.attempts(version.digest, tests)
    if tests:
        known = {a.test_id for a in session.catalog.attempts(version.digest)}
        unknown = [t for t in tests if t not in known]
        if unknown:
            raise UsageError(f"no results for {', '.join(unknown)} on {label(version)}; "
                             f"tests with results: {', '.join(sorted(known)) or 'none'}")
    rows = [AttemptRow(run=a.run_id, test=a.test_id, testbed=a.testbed, attempt=a.attempt, verdict=a.verdict,
                       exit_code=a.exit_code, reason=a.reason,
                       duration=round((a.ended_at - a.started_at).total_seconds(), 3),
                       started=a.started_at.isoformat(timespec="seconds"),
                       log=str(session.store.path(a.log_digest)) if a.log_digest else None) for a in attempts]
    per_run: dict[int, int] = {}
    for a in attempts:
        per_run[a.run_id] = per_run.get(a.run_id, 0) + 1
    runs = [RunRow(run=r.id, status=r.status, exit_code=r.exit_code, actor=r.actor,
                   started=r.started_at.isoformat(timespec="seconds"),
                   ended=r.ended_at.isoformat(timespec="seconds") if r.ended_at else None,
                   tests=len(json.loads(r.options or "{}").get("tests", [])), attempts=per_run.get(r.id, 0))
            for r in session.catalog.runs(version.digest) if not tests or r.id in per_run]
    return Results(image=label(version), digest=f"sha256:{version.digest}", state=version.state, runs=runs,
                   attempts=rows)


class EventRow(BaseModel):
    at: datetime
    event: str  # "testing → stable", "run 3 started", "run 3 aborted"
    actor: str
    reason: str


RUN_ENDINGS = {"aborted": "the imageci process running it died (killed or crashed)",
               "interrupted": "Ctrl-C / SIGTERM"}


def events(session: Session, ref: str) -> list[EventRow]:
    """The audit trail of a version: state changes and runs, oldest first."""
    version = session.catalog.resolve(ref)
    rows = [EventRow(at=as_utc(e.at), event=f"{e.from_state or '-'} → {e.to_state}", actor=e.actor, reason=e.reason)
            for e in session.catalog.events(version.id)]
    for r in session.catalog.runs(version.digest):
        rows.append(EventRow(at=as_utc(r.started_at), event=f"run {r.id} started", actor=r.actor, reason=""))
        if r.ended_at is not None:
            exit_note = f"exit {r.exit_code}" if r.exit_code is not None else ""
            why = "; ".join(x for x in (exit_note, RUN_ENDINGS.get(r.status, "")) if x)
            rows.append(EventRow(at=as_utc(r.ended_at), event=f"run {r.id} {r.status}", actor=r.actor, reason=why))
    return sorted(rows, key=lambda row: row.at)


class FlakyAttempt(BaseModel):
    attempt: int
    verdict: str


class FlakyRow(BaseModel):
    image: str
    run: int
    test: str
    testbed: str
    failed_attempts: list[int]
    attempts: list[FlakyAttempt]


def flaky(session: Session, name: str | None = None, since: timedelta = timedelta(days=30)) -> list[FlakyRow]:
    """Every transient failure since ``since`` ago: a test that failed and then passed in one run."""
    return [FlakyRow(image=f"{e.product}@{e.serial}", run=e.run_id, test=e.test_id, testbed=e.testbed,
                     failed_attempts=e.failed_attempts,
                     attempts=[FlakyAttempt(attempt=n, verdict=v) for n, v in e.attempts])
            for e in session.catalog.transient_failures(name, utcnow() - since)]
