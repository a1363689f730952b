"""Flake policy: from the quarantine file, the product's quarantine entries kept
in the catalog, and the grace period for new tests to the waivers the engine
and the gate apply. (The flaky report is a catalog
query: ``store.lookups.transient_failures``.)

Order: a quarantine entry in force wins; otherwise a test whose first run on
this product is younger than the suite's ``grace`` only warns. Expired
quarantine entries stop applying; :func:`expired_warnings` names them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

from imageci.definitions.quarantine import Located, Quarantine, QuarantineEntry
from imageci.engine.waivers import Waiver, WaiverFn
from imageci.store.catalog import Catalog
from imageci.store.models import Quarantine as QuarantineRow
from imageci.store.models import utcnow

CATALOG_SOURCE = "catalog quarantine"  # Located.path of a catalog entry; its line is the entry's id


def entry_of(row: QuarantineRow) -> QuarantineEntry:
    """A catalog entry as the quarantine file's entries are read."""
    return QuarantineEntry(test=row.test, tracker=row.tracker, expires=row.expires, mode=row.mode,  # type: ignore[arg-type]
                           testbeds=tuple(json.loads(row.testbeds)) if row.testbeds else None,
                           arch=tuple(json.loads(row.arch)) if row.arch else None, reason=row.reason)


def with_catalog(catalog: Catalog, product: str, quarantine: Quarantine) -> Quarantine:
    """``quarantine`` (a suite's file) and, after it, the entries kept in the catalog for ``product`` that were
    not lifted."""
    kept = tuple(Located(entry_of(row), CATALOG_SOURCE, row.id) for row, _name in catalog.quarantines(product))
    return Quarantine(quarantine.entries + kept) if kept else quarantine


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


def policy_for(catalog: Catalog, product: str, test_ids: Sequence[str], quarantine: Quarantine, *,
               arch: str, grace: timedelta | None) -> WaiverFn | None:
    """The waivers of ``product``'s tests: ``quarantine`` (its suite's file) with its catalog entries, and
    ``grace`` for new tests."""
    quarantine = with_catalog(catalog, product, quarantine)
    if not quarantine.entries and grace is None:
        return None
    seen = catalog.first_seen(product, test_ids) if grace is not None else {}
    return make_waiver(quarantine, arch=arch, grace=grace, first_seen=seen)


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
