"""What the catalog answers about runs and their attempts (portable SQL over a ``store.reading.Reader``);
re-exported by ``store.lookups``, which every reader asks.

Its rows are named tuples, not frozen dataclasses: as immutable, and a version's 2,000 attempts are made in
two thirds of the time (a frozen dataclass sets each field through ``object.__setattr__``), its classes
defined in a tenth (a dataclass compiles its methods when its module is imported)."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from imageci.store.reading import Reader, stamp
from imageci.store.states import RunStatus


class AttemptInfo(NamedTuple):
    id: int
    run_id: int
    test_id: str
    testbed: str
    attempt: int
    verdict: str
    exit_code: int | None
    reason: str
    started_at: datetime
    ended_at: datetime
    log_digest: str | None
    test_digest: str = ""
    worker: str | None = None  # the Celery worker that ran it
    known: str | None = None  # the tracker of the known failure its log matched
    findings: str | None = None  # the machine's complaints in its window (JSON: [{"kind", "text"}])


def attempts(reader: Reader, image_digest: str) -> list[AttemptInfo]:
    """Every attempt recorded for these bytes, oldest first."""
    return [AttemptInfo(i, run, str(test), str(bed), n, str(verdict), code, str(reason or ""), stamp(start),
                        stamp(end), log, str(tdigest), worker, known, found)
            for i, run, test, bed, n, verdict, code, reason, start, end, log, tdigest, worker, known, found
            in reader.rows(
                "SELECT id, run_id, test_id, testbed, attempt, verdict, exit_code, reason, started_at, ended_at, "
                "log_digest, test_digest, worker, known, findings FROM attempts WHERE image_digest = :digest "
                "ORDER BY id",
                {"digest": image_digest})]


class RunInfo(NamedTuple):
    id: int
    status: str
    exit_code: int | None
    actor: str
    started_at: datetime
    ended_at: datetime | None
    options: str  # JSON
    repeats: int | None = None  # the run this one repeats (``imageci rerun``)


def runs(reader: Reader, image_digest: str) -> list[RunInfo]:
    """Every run against these bytes, oldest first."""
    return [RunInfo(i, str(status), code, str(actor or ""), stamp(start), stamp(end) if end is not None else None,
                    str(options or "{}"), repeats)
            for i, status, code, actor, start, end, options, repeats in reader.rows(
                "SELECT id, status, exit_code, actor, started_at, ended_at, options, repeats FROM runs "
                "WHERE image_digest = :digest ORDER BY id", {"digest": image_digest})]


# Both read through the index ix_runs_running (status, host), not the whole table.
RUNNING_HERE = "SELECT id, owner FROM runs WHERE status = :running AND host = :host ORDER BY id"
RUNNING = "SELECT id FROM runs WHERE status = :running"


def running(reader: Reader, host: str) -> list[tuple[int, str | None]]:
    """(id, owner lock file) of the runs of ``host`` still marked running."""
    return [(int(i), owner) for i, owner in reader.rows(RUNNING_HERE, {"running": RunStatus.RUNNING.value,
                                                                       "host": host})]


def running_ids(reader: Reader) -> set[int]:
    """The ids of every run still marked running, on any host."""
    return {int(i) for i, in reader.rows(RUNNING, {"running": RunStatus.RUNNING.value})}


def first_pass(reader: Reader, image_digest: str, test_id: str, test_digest: str,
               testbed: str) -> tuple[int, str | None] | None:
    """(run id, findings) of the first pass of exactly these bytes with exactly this test on this testbed (what
    ``Catalog.passing_attempt`` finds, without the ORM)."""
    rows = reader.rows("SELECT run_id, findings FROM attempts WHERE image_digest = :digest AND test_id = :test "
                       "AND test_digest = :tdigest AND testbed = :bed AND verdict = 'pass' ORDER BY id LIMIT 1",
                       {"digest": image_digest, "test": test_id, "tdigest": test_digest, "bed": testbed})
    return (int(rows[0][0]), rows[0][1]) if rows else None
