"""Flake policy: from quarantine entries (a suite's file and the product's entries
kept in the catalog, gathered by ``app.waivers``) and the grace period for new
tests to the waivers the engine and the gate apply. (The flaky report is a
catalog query: ``store.lookups.transient_failures``.)

Order: a quarantine entry in force wins; otherwise a test whose first run on
this product is younger than the suite's ``grace`` only warns. Expired
quarantine entries stop applying; :func:`expired_warnings` names them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from imageci.definitions.quarantine import Quarantine
from imageci.engine.waivers import Waiver, WaiverFn
from imageci.store.states import utcnow


def make_waiver(quarantine: Quarantine, *, arch: str, grace: timedelta | None = None,
                first_seen: dict[str, datetime] | None = None, now: datetime | None = None) -> WaiverFn:
    now = now or utcnow()
    seen = first_seen or {}

    def waiver(test_id: str, testbed: str) -> Waiver | None:
        entry = quarantine.match(test_id, testbed, arch, now.date())
        if entry is not None:
            why = f"quarantined until {entry.expires.isoformat()} ({entry.tracker})"
            return Waiver(entry.mode, f"{why}: {entry.reason}" if entry.reason else why)
        if grace is not None:
            first = seen.get(test_id)
            if first is None or now - first < grace:
                since = "first run now" if first is None else f"first run {first:%Y-%m-%d %H:%M}"
                return Waiver("warn", f"new test ({since}; grace period {_human(grace)})")
        return None

    return waiver


def expired_warnings(quarantine: Quarantine, today: datetime | None = None) -> list[str]:
    day = (today or utcnow()).date()
    return [f"{loc.path}:{loc.line}: quarantine of {loc.entry.test!r} expired on {loc.entry.expires.isoformat()} "
            f"({loc.entry.tracker}); it no longer applies" for loc in quarantine.expired(day)]


def _human(d: timedelta) -> str:
    secs = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs % size == 0 and secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"
