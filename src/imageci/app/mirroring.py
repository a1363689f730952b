"""Testing a server's image on this machine: ``fetch`` brings the version
(its artifacts by digest, each checked while it streams into the local store,
and its definition) into this home; the run happens here on local testbeds,
exactly as a local one; ``report`` then writes the run and every attempt with
its log to the server, each with an idempotency key, so a report that is
retried (a dropped connection, a re-run of ``report``) is recorded once."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Protocol

from imageci.app.operations import Asks, RefArgs
from imageci.app.queries import VersionDetail, version_op
from imageci.app.recording import (
    AttemptIn,
    BatchArgs,
    FinishArgs,
    MachineFinding,
    RunEnd,
    RunEnded,
    RunStart,
    RunStarted,
    attempts_record,
    run_finish,
)
from imageci.app.regressions import REFERENCE_OPTION
from imageci.app.session import Session
from imageci.app.testing import RunOutcome
from imageci.checks import complaints
from imageci.errors import UsageError
from imageci.reports.reproducer import write_portable_reproducer
from imageci.store import lookups
from imageci.store.blobs import BlobWriter

BATCH = 200  # attempts per request when reporting


class Origin(Asks, Protocol):
    """The server a version comes from and its results go to (``client.remote.ApiClient``)."""

    def download(self, ref: str, filename: str, into: BlobWriter) -> None: ...

    def start_run(self, ref: str, body: RunStart, key: str) -> RunStarted: ...



def fetch(session: Session, origin: Origin, ref: str) -> tuple[VersionDetail, str]:
    """The server's version ``ref``, present in this home: (its detail, the local reference to test).
    Only artifacts this store lacks are downloaded; the same bytes fetched again are the same version."""
    from imageci.store.catalog import NewArtifact

    detail = origin.call(version_op, RefArgs(ref=ref))
    digest = detail.digest.removeprefix("sha256:")
    for a in detail.artifacts:
        if not session.store.has(a.digest):
            origin.download(f"{detail.name}@{detail.version}", a.filename,
                            session.store.writer(a.digest, a.size, None))
    found = session.catalog.find_by_digest(detail.name, digest)
    if found is None:
        found = session.catalog.register_version(
            detail.name, digest, [NewArtifact(a.kind, a.filename, a.digest.removeprefix("sha256:"), a.size)
                                  for a in detail.artifacts],
            input_hash=None, definition=detail.definition, architecture=detail.architecture,
            build_info={"fetched_from": f"{detail.name}@{detail.version}"}, serial=detail.version)
    return detail, f"{detail.name}@{found.serial}"


def report(session: Session, origin: Origin, detail: VersionDetail, run_id: int, exit_code: int) -> RunEnded:
    """Write the local run ``run_id`` of a fetched version to the server: the run, its attempts with
    their logs, its end. Keys name this host and the local ids, so a retry changes nothing."""
    run = lookups.run_of(session.reader, run_id)
    if run is None:
        raise UsageError(f"no local run {run_id}")
    info, digest, _version = run
    if f"sha256:{digest}" != detail.digest:
        raise UsageError(f"local run {run_id} tested sha256:{digest}, not {detail.digest}")
    host = "".join(c if c.isalnum() or c in ".-" else "-" for c in socket.gethostname())[:40]
    prefix = f"{host}:{digest[:16]}:{run_id}:{info.started_at.timestamp():.0f}"
    options = json.loads(info.options)
    started = origin.start_run(f"{detail.name}@{detail.version}",
                               RunStart(tests=list(options.get("tests", [])),
                                        testbeds=list(options.get("testbeds", [])), host=host,
                                        reference_for=options.get(REFERENCE_OPTION)), f"{prefix}:run")
    batch: list[AttemptIn] = []
    for a in lookups.attempts(session.reader, digest):
        if a.run_id != run_id:
            continue
        log = session.store.read_bytes(a.log_digest).decode(errors="replace") if a.log_digest else None
        verdict = a.verdict if a.verdict in ("pass", "fail", "error", "skip") else "error"
        batch.append(AttemptIn(test=a.test_id, test_digest=a.test_digest, testbed=a.testbed, attempt=a.attempt,
                               started=a.started_at, ended=a.ended_at, exit_code=a.exit_code,
                               verdict=verdict, reason=a.reason, log=log,  # type: ignore[arg-type]
                               key=f"{prefix}:attempt:{a.id}",
                               findings=[MachineFinding(kind=f.kind, text=f.text)  # type: ignore[arg-type]
                                         for f in complaints.decoded(a.findings)]))
        if len(batch) == BATCH:
            origin.call(attempts_record, BatchArgs.model_construct(run_id=started.run, body=batch))
            batch = []
    if batch:
        origin.call(attempts_record, BatchArgs.model_construct(run_id=started.run, body=batch))
    return origin.call(run_finish, FinishArgs(run_id=started.run, body=RunEnd(exit_code=exit_code)))


def portable_reproducer(session: Session, outcome: RunOutcome, detail: VersionDetail, server: str) -> Path:
    """The run's ``reproduce.sh``, rewritten to re-run it from any machine against ``server``."""
    return write_portable_reproducer(session.settings.runs_dir / str(outcome.report.run_id), outcome.spec, server,
                                     f"{detail.name}@{detail.version}")
