"""A version's test matrix: test × testbed (× architecture, for a version built
with others from one definition), one cell per pair with the verdict of the
newest run that ran it (its retries aggregated as the engine does), how many
attempts were made in all, and how long the newest took."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel

from imageci.app import access, queries, regressions
from imageci.app.access import LOCAL, Principal
from imageci.app.session import Session
from imageci.engine.aggregate import aggregate
from imageci.errors import UnknownReferenceError
from imageci.store import lookups
from imageci.store.lookups import AttemptInfo, VersionInfo
from imageci.verdicts import Verdict


class Column(BaseModel):
    architecture: str
    testbed: str
    image: str  # NAME@SERIAL whose attempts fill the column


class Cell(BaseModel):
    verdict: str | None  # None: never run on these bytes
    attempts: int = 0  # every attempt, every run
    runs: int = 0
    run: int | None = None  # the newest run that ran it
    duration: float | None = None  # seconds, the newest attempt
    reason: str = ""  # the newest run's last reason that was not a pass
    change: str | None = None  # on a testing version, against stable: regression, always-failed, fixed, new


class MatrixRow(BaseModel):
    test: str
    cells: list[Cell]  # one per column


class Matrix(BaseModel):
    image: str
    columns: list[Column]
    rows: list[MatrixRow]
    counts: dict[str, int]  # verdict (or "not run") → cells


@dataclass
class _Acc:
    attempts: int = 0
    runs: int = 0
    last_run: int = -1
    verdicts: list[Verdict] | None = None
    reason: str = ""
    duration: float | None = None
    digest: str = ""  # the test content of the newest attempt
    change: str | None = None  # against stable


def _cells(attempts: Iterable[AttemptInfo]) -> dict[tuple[str, str], _Acc]:
    acc: dict[tuple[str, str], _Acc] = {}
    for a in attempts:  # oldest first
        cell = acc.setdefault((a.test_id, a.testbed), _Acc())
        cell.attempts += 1
        if a.run_id != cell.last_run:
            cell.runs += 1
            cell.last_run, cell.verdicts, cell.reason = a.run_id, [], ""
        assert cell.verdicts is not None
        cell.verdicts.append(Verdict(a.verdict))
        if a.verdict != Verdict.PASS and a.reason:
            cell.reason = a.reason
        cell.duration = round((a.ended_at - a.started_at).total_seconds(), 3)
        cell.digest = a.test_digest
    return acc


@queries.bulk
def matrix(session: Session, ref: str, *, viewer: Principal = LOCAL, siblings: Iterable[VersionInfo] = (),
           expected: Iterable[tuple[str, str]] = ()) -> Matrix:
    """The matrix of the version ``ref`` names, with a column group per sibling architecture (``siblings``:
    the versions built with it, which ``viewer`` may see) and an empty cell for each ``expected`` (test,
    testbed) pair (the gate's requirements) that never ran."""
    version = access.resolve(session.reader, viewer, ref)
    sources = [version, *sorted(siblings, key=lambda v: v.architecture)]
    columns: list[Column] = []
    found: dict[tuple[int, str, str], _Acc] = {}
    tests: dict[str, None] = {}
    for source in sources:
        cells = _cells(lookups.attempts(session.reader, source.digest))
        told_by = regressions.reference_for(session, source)
        beds = sorted({tb for _t, tb in cells} | ({tb for _t, tb in expected} if source is version else set()))
        for (test, tb), acc in cells.items():
            found[(len(columns) + beds.index(tb), test, tb)] = acc
            tests.setdefault(test)
            if told_by is not None and acc.verdicts:
                acc.change = told_by.change((test, tb, acc.digest), [v.value for v in acc.verdicts])
        columns += [Column(architecture=source.architecture, testbed=tb, image=source.label) for tb in beds]
    for test, _tb in expected:
        tests.setdefault(test)
    rows, counts = [], {v.value: 0 for v in Verdict} | {"not run": 0}
    for test in sorted(tests):
        row = []
        for i, col in enumerate(columns):
            got = found.get((i, test, col.testbed))
            if got is None or not got.verdicts:
                row.append(Cell(verdict=None))
                counts["not run"] += 1
                continue
            verdict = aggregate(got.verdicts)
            counts[verdict.value] += 1
            row.append(Cell(verdict=verdict.value, attempts=got.attempts, runs=got.runs, run=got.last_run,
                            duration=got.duration, reason=got.reason, change=got.change))
        rows.append(MatrixRow(test=test, cells=row))
    return Matrix(image=version.label, columns=columns, rows=rows, counts=counts)


class CellAttempts(BaseModel):
    image: str
    test: str
    testbed: str
    attempts: list[queries.AttemptRow]  # oldest first


def cell(session: Session, ref: str, test: str, testbed: str | None = None, *,
         viewer: Principal = LOCAL) -> CellAttempts:
    """Every attempt of ``test`` (on ``testbed``, when given) on the version ``ref`` names."""
    found = queries.results(session, ref, viewer=viewer)
    mine = [a for a in found.attempts if a.test == test and (testbed is None or a.testbed == testbed)]
    if not mine:
        raise UnknownReferenceError(f"no attempt of {test!r} on {found.image}" + (f" on {testbed}" if testbed else ""))
    return CellAttempts(image=found.image, test=test, testbed=testbed or "", attempts=mine)
