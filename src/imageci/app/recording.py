"""Recording a run from elsewhere: a client that ran tests on its own testbeds
(``imageci run`` against a server, a worker) starts a run for a version, sends
each attempt as it ends and finishes the run — the same rows the engine writes
locally. Every step carries the client's idempotency key, so a retried request
is recorded once; scope ``test`` in the product's namespace is needed."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from imageci.app import access, livelogs
from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.operations import RunArgs, operation
from imageci.app.queries import MachineFinding as MachineFinding  # re-exported: what a worker records
from imageci.app.regressions import REFERENCE_OPTION
from imageci.app.session import Session
from imageci.errors import UnknownReferenceError, UsageError
from imageci.store import lookups
from imageci.store.states import RunStatus, as_utc

KEY = r"^[A-Za-z0-9._:-]{8,128}$"
MAX_LOG = 16 << 20  # characters of one attempt's log


class RunStart(BaseModel):
    tests: list[str] = Field(default_factory=list, max_length=100_000)  # what the run plans
    testbeds: list[str] = Field(default_factory=list, max_length=64)
    host: str | None = Field(default=None, max_length=255)  # where it runs
    reference_for: str | None = Field(default=None, max_length=255, description=(
        "a reference run: the testing version (NAME@SERIAL) whose failures it tells apart"))


class RunStarted(BaseModel):
    run: int
    image: str  # NAME@SERIAL
    digest: str
    created: bool  # False: this idempotency key had started it already


class AttemptIn(BaseModel):
    test: str = Field(min_length=1, max_length=255)
    test_digest: str = Field(min_length=1, max_length=64)
    testbed: str = Field(min_length=1, max_length=64)
    attempt: int = Field(ge=1, le=1000)
    started: datetime
    ended: datetime
    exit_code: int | None = Field(default=None, ge=-(1 << 31), le=(1 << 31) - 1)
    verdict: Literal["pass", "fail", "error", "skip"]
    reason: str = Field(default="", max_length=65536)
    log: str | None = Field(default=None, max_length=MAX_LOG)
    key: str | None = Field(default=None, description="its idempotency key, in a batch")
    worker: str | None = Field(default=None, max_length=255, description="the worker that ran it")
    findings: list[MachineFinding] = Field(default_factory=list, max_length=100,
                                      description="the machine's own complaints in the attempt's window")


class AttemptRecorded(BaseModel):
    id: int
    created: bool  # False: this idempotency key had recorded it already


class RunEnd(BaseModel):
    exit_code: int = Field(ge=0, le=255)
    status: Literal["finished", "interrupted"] = "finished"


class RunEnded(BaseModel):
    run: int
    status: str
    exit_code: int | None


class RunState(BaseModel):
    """Whether a run still takes attempts, and which bytes it tests (a worker checks both first)."""

    run: int
    status: str  # running | finished | interrupted | aborted
    image: str  # NAME@SERIAL
    digest: str  # sha256:…


def _key(key: str | None) -> str | None:
    if key is not None and not re.fullmatch(KEY, key):
        raise UsageError("an Idempotency-Key is 8 to 128 letters, digits, '.', '_', ':' or '-'")
    return key


def _run(session: Session, run_id: int, by: Principal, what: str) -> tuple[lookups.RunInfo, str]:
    """The run (and the digest it tests) if ``by`` may ``what`` with it."""
    found = lookups.run_of(session.reader, run_id)
    version = found[2] if found else None
    if found is None or version is None or not by.sees(version.namespace, version.public, version.state):
        raise UnknownReferenceError(f"no run {run_id}")
    by.require(Scope.TEST, version.namespace, what)
    return found[0], found[1]


def start_run(session: Session, ref: str, body: RunStart, *, by: Principal = LOCAL,
              key: str | None = None) -> RunStarted:
    """A run of the version ``ref`` names, recorded as ``by`` (its audit actor)."""
    version = access.resolve(session.reader, by, ref)
    by.require(Scope.TEST, version.namespace, f"record runs of {version.label}")
    options: dict[str, object] = {"tests": body.tests, "testbeds": body.testbeds, "remote": True}
    if body.reference_for is not None:
        tested = access.resolve(session.reader, by, body.reference_for)
        if tested.name != version.name:
            raise UsageError(f"a reference run of {version.label} tells apart failures of {version.name}'s "
                             f"versions, not of {tested.label}")
        options[REFERENCE_OPTION] = tested.label
    run_id, created = session.catalog.start_run_once(
        version.digest, version.id, options,
        actor=None if by == LOCAL else by.name, host=body.host or "remote", idempotency_key=_key(key))
    return RunStarted(run=run_id, image=version.label, digest=f"sha256:{version.digest}", created=created)


def record_attempt(session: Session, run_id: int, body: AttemptIn, *, by: Principal = LOCAL,
                   key: str | None = None) -> AttemptRecorded:
    """One attempt of a running run; its log goes to the store."""
    return record_attempts(session, run_id, [body.model_copy(update={"key": key or body.key})], by=by)[0]


MAX_BATCH = 1000


def record_attempts(session: Session, run_id: int, bodies: list[AttemptIn], *,
                    by: Principal = LOCAL) -> list[AttemptRecorded]:
    """Attempts of a running run in one transaction (a client reporting a whole run); each with its own
    idempotency key, so a retried batch records only what is missing."""
    from imageci.store.models import Attempt

    if len(bodies) > MAX_BATCH:
        raise UsageError(f"at most {MAX_BATCH} attempts in one batch (got {len(bodies)})")
    keys = [b.key for b in bodies if b.key is not None]
    if len(set(keys)) != len(keys):
        raise UsageError("two attempts of one batch share an idempotency key")
    run, digest = _run(session, run_id, by, f"record attempts of run {run_id}")
    if run.status != RunStatus.RUNNING.value:
        raise UsageError(f"run {run_id} is {run.status}: it takes no more attempts")
    rows = []
    for body in bodies:
        if as_utc(body.ended) < as_utc(body.started):
            raise UsageError(f"attempt {body.test}#{body.attempt} ends before it starts")
        log = session.store.put_bytes(body.log.encode()).digest if body.log else None
        rows.append(Attempt(
            run_id=run_id, image_digest=digest, test_id=body.test, test_digest=body.test_digest,
            testbed=body.testbed, attempt=body.attempt, started_at=as_utc(body.started),
            ended_at=as_utc(body.ended), exit_code=body.exit_code, verdict=body.verdict, reason=body.reason,
            log_digest=log, idempotency_key=_key(body.key), worker=body.worker,
            findings=json.dumps([f.model_dump() for f in body.findings]) if body.findings else None))
    return [AttemptRecorded(id=i, created=created) for i, created in session.catalog.record_attempts_once(rows)]


def finish_run(session: Session, run_id: int, body: RunEnd, *, by: Principal = LOCAL) -> RunEnded:
    """End a running run with its exit code (finishing it again changes nothing)."""
    run, _digest = _run(session, run_id, by, f"finish run {run_id}")
    if run.status == RunStatus.RUNNING.value:
        session.catalog.finish_run(run_id, body.exit_code, RunStatus(body.status))
    livelogs.sweep(session)
    done = lookups.run_of(session.catalog.reader(), run_id)
    assert done is not None
    return RunEnded(run=run_id, status=done[0].status, exit_code=done[0].exit_code)


def run_state(session: Session, run_id: int, *, by: Principal = LOCAL) -> RunState:
    """The state of a run ``by`` may record attempts of."""
    run, digest = _run(session, run_id, by, f"record attempts of run {run_id}")
    found = lookups.run_of(session.reader, run_id)
    assert found is not None and found[2] is not None
    return RunState(run=run_id, status=run.status, image=found[2].label, digest=f"sha256:{digest}")


class FinishArgs(RunArgs):
    body: RunEnd


class BatchArgs(RunArgs):
    body: list[AttemptIn] = Field(max_length=MAX_BATCH)


@operation("POST", "/runs/{run_id}/attempts/batch", request=BatchArgs, answer=list[AttemptRecorded], tag="runs",
           name="attempts_record")
def attempts_record(session: Session, req: BatchArgs, by: Principal) -> list[AttemptRecorded]:
    """Record up to 1000 attempts of a running run in one transaction, each with its own ``key``
    (idempotency): a retried batch records only what is missing."""
    return record_attempts(session, req.run_id, req.body, by=by)


@operation("POST", "/runs/{run_id}/finish", request=FinishArgs, answer=RunEnded, tag="runs", name="run_finish")
def run_finish(session: Session, req: FinishArgs, by: Principal) -> RunEnded:
    """End a run with its exit code."""
    return finish_run(session, req.run_id, req.body, by=by)


@operation("GET", "/runs/{run_id}/state", request=RunArgs, answer=RunState, tag="runs", name="run_state")
def run_state_op(session: Session, req: RunArgs, by: Principal) -> RunState:
    """Whether a run still takes attempts and the digest it tests (scope ``test``): what a worker
    asks before it runs a job of it."""
    return run_state(session, req.run_id, by=by)
