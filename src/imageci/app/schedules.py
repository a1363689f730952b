"""Schedules: "rebuild once a day if anything changed" is one line of a definition (``schedule: "0 4 * * *"``,
a cron expression in UTC), and retention runs on its own. ``imageci scheduler`` keeps them (``--once``: what
is due now, for a systemd timer or cron).

A schedule seen for the first time fires at its next scheduled time, not at once; occurrences missed while
no scheduler ran fire once, on the next tick (like a persistent systemd timer). A fire of a definition runs
the pipeline: the build is skipped when the input hash is unchanged (the mirror published nothing new and the
definition is the same), the version is tested, and promoted when its gate holds. Each fire is claimed in the
catalog first, so two schedulers never run the same occurrence twice."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from imageci.app.planning import TestRequest
from imageci.app.session import Session
from imageci.definitions.image import load_definition
from imageci.errors import ImageciError, UsageError
from imageci.exitcodes import ExitCode
from imageci.store.states import as_utc, utcnow

log = logging.getLogger("imageci.app")
RETENTION = "retention"


@dataclass(frozen=True)
class Entry:
    key: str  # pipeline:/abs/path/image.yaml | retention
    cron: str
    definition: Path | None = None  # None: retention


class Fired(BaseModel):
    key: str
    scheduled_for: datetime
    exit_code: int
    outcome: str  # one line: built and promoted, unchanged, gate refused, failed: why


def next_time(cron: str, after: datetime) -> datetime:
    from croniter import croniter

    return as_utc(croniter(cron, as_utc(after)).get_next(datetime))


def previous_time(cron: str, at: datetime) -> datetime:
    from croniter import croniter

    return as_utc(croniter(cron, as_utc(at)).get_prev(datetime))


def entries(definitions: Sequence[Path], retention: str | None) -> list[Entry]:
    """The schedules of ``definitions`` (those with a ``schedule:``) and retention's cron (if given); a bad
    definition is an error naming its file:line, before anything runs."""
    out = []
    for path in definitions:
        loaded = load_definition(path)
        if loaded.definition.schedule is None:
            log.warning("%s has no 'schedule:'; the scheduler leaves it alone", path)
            continue
        out.append(Entry(f"pipeline:{loaded.path}", loaded.definition.schedule, loaded.path))
    if retention is not None:
        from croniter import croniter

        if not croniter.is_valid(retention) or len(retention.split()) not in (1, 5):
            raise UsageError(f"--retention must be a cron expression of 5 fields, e.g. '30 3 * * *' "
                             f"(got {retention!r})")
        out.append(Entry(RETENTION, retention))
    if not out:
        raise UsageError("nothing to schedule: no definition given has a 'schedule:' line, and no --retention")
    return out


def due(session: Session, entry: Entry, now: datetime) -> datetime | None:
    """The scheduled time ``entry`` should fire for at ``now`` (None: not due)."""
    row = session.catalog.schedule(entry.key, entry.cron, now)
    anchor = as_utc(row.fired_for) if row.fired_for is not None else as_utc(row.seen_at)
    latest = previous_time(entry.cron, now)
    return latest if latest > anchor else None


def _pipeline(session: Session, definition: Path) -> tuple[int, str]:
    from imageci.app.pipeline import pipeline

    outcome = pipeline(session, definition, TestRequest(ref=""))
    v = outcome.build.version
    what = "unchanged inputs, not rebuilt" if outcome.build.skipped else "built"
    ref = f"{v.product.name}@{v.serial}"
    if outcome.already_stable:
        return int(outcome.exit_code), f"{ref}: {what}; already stable"
    if outcome.promoted:
        return int(outcome.exit_code), f"{ref}: {what}; promoted to stable"
    if outcome.interrupted:
        return int(outcome.exit_code), f"{ref}: {what}; run interrupted"
    return int(outcome.exit_code), f"{ref}: {what}; not promoted: {(outcome.refused or '').splitlines()[0]}"


def _retention(session: Session) -> tuple[int, str]:
    from imageci.app.retention import retention

    report = retention(session)
    return 0, (f"retention: {sum(a.action == 'inactive' for a in report.actions)} retired, "
               f"{sum(a.action == 'deleted' for a in report.actions)} deleted, {len(report.blobs_deleted)} blob(s) "
               "deleted")


def fire(session: Session, entry: Entry) -> tuple[int, str]:
    """Run one schedule's work now: (exit code, one line)."""
    try:
        if entry.definition is None:
            return _retention(session)
        return _pipeline(session, entry.definition)
    except ImageciError as exc:
        return int(exc.exit_code), f"failed: {exc}"


def tick(session: Session, schedule: Sequence[Entry], now: datetime | None = None,
         on_fire: Callable[[Entry, datetime], None] | None = None) -> list[Fired]:
    """Fire every entry due at ``now`` (default: now), one after another; what each did."""
    now = now or utcnow()
    out = []
    for entry in schedule:
        when = due(session, entry, now)
        if when is None or not session.catalog.claim_fire(entry.key, when, now):
            continue
        if on_fire is not None:
            on_fire(entry, when)
        code, line = fire(session, entry)
        session.catalog.fired(entry.key, line, code)
        out.append(Fired(key=entry.key, scheduled_for=when, exit_code=code, outcome=line))
        if code not in (ExitCode.OK, ExitCode.FAILED, ExitCode.GATE_REFUSED):
            log.warning("%s (%s): exit %d: %s", entry.key, when.isoformat(timespec="minutes"), code, line)
    return out


def next_due(schedule: Sequence[Entry], now: datetime) -> datetime:
    """The earliest time one of ``schedule`` fires after ``now``."""
    return min(next_time(e.cron, now) for e in schedule)
