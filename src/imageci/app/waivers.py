"""The waivers of a product's tests, gathered: its suite's quarantine file, the
quarantine entries kept in the catalog for it, and when each test first ran
(for the grace period); ``policy.flake`` decides from them."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from imageci.definitions.quarantine import Located, Quarantine, QuarantineEntry, quarantine_for_suite
from imageci.engine.waivers import WaiverFn
from imageci.policy.flake import expired_warnings, make_waiver
from imageci.store import gatelookups
from imageci.store.gatelookups import QuarantineInfo
from imageci.store.reading import Reader

if TYPE_CHECKING:
    from imageci.app.session import Session
    from imageci.app.versions import Carried
    from imageci.checks.base import Check
    from imageci.definitions.suite import Suite

log = logging.getLogger("imageci.app")

CATALOG_SOURCE = "catalog quarantine"  # Located.path of a catalog entry; its line is the entry's id


def entry_of(row: QuarantineInfo) -> QuarantineEntry:
    """A catalog entry as the quarantine file's entries are read."""
    return QuarantineEntry(test=row.test, tracker=row.tracker, expires=row.expires, mode=row.mode,  # type: ignore[arg-type]
                           testbeds=tuple(json.loads(row.testbeds)) if row.testbeds else None,
                           arch=tuple(json.loads(row.arch)) if row.arch else None, reason=row.reason)


def with_catalog(reader: Reader, product: str, quarantine: Quarantine) -> Quarantine:
    """``quarantine`` (a suite's file) and, after it, the entries kept in the catalog for ``product`` that were
    not lifted."""
    kept = tuple(Located(entry_of(row), CATALOG_SOURCE, row.id) for row in gatelookups.quarantines(reader, product))
    return Quarantine(quarantine.entries + kept) if kept else quarantine


def policy_for(reader: Reader, product: str, test_ids: Sequence[str], quarantine: Quarantine, *,
               arch: str, grace: timedelta | None) -> WaiverFn | None:
    """The waivers of ``product``'s tests: ``quarantine`` (its suite's file) with its catalog entries, and
    ``grace`` for new tests."""
    quarantine = with_catalog(reader, product, quarantine)
    if not quarantine.entries and grace is None:
        return None
    seen = gatelookups.first_seen(reader, product, list(test_ids)) if grace is not None else {}
    return make_waiver(quarantine, arch=arch, grace=grace, first_seen=seen)


def flake_policy(session: Session, version: Carried, suite: Suite | None, checks: Sequence[Check],
                 override: Path | None, *, warn: bool = True) -> WaiverFn | None:
    """The waivers for this version's tests: its quarantine file and the suite's grace period."""
    quarantine = quarantine_for_suite(suite.path if suite else None, override)
    if warn:
        for line in expired_warnings(quarantine):
            log.warning("%s", line)
    return policy_for(session.reader, version.name, [c.id for c in checks], quarantine,
                      arch=version.architecture, grace=suite.grace if suite else None)
