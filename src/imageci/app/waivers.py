"""The waivers of a product's tests, gathered: its suite's quarantine file, the
quarantine entries kept in the catalog for it, and when each test first ran
(for the grace period); ``policy.flake`` decides from them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta

from imageci.definitions.quarantine import Located, Quarantine, QuarantineEntry
from imageci.engine.waivers import WaiverFn
from imageci.policy.flake import make_waiver
from imageci.store.catalog import Catalog
from imageci.store.models import Quarantine as QuarantineRow

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


def policy_for(catalog: Catalog, product: str, test_ids: Sequence[str], quarantine: Quarantine, *,
               arch: str, grace: timedelta | None) -> WaiverFn | None:
    """The waivers of ``product``'s tests: ``quarantine`` (its suite's file) with its catalog entries, and
    ``grace`` for new tests."""
    quarantine = with_catalog(catalog, product, quarantine)
    if not quarantine.entries and grace is None:
        return None
    seen = catalog.first_seen(product, test_ids) if grace is not None else {}
    return make_waiver(quarantine, arch=arch, grace=grace, first_seen=seen)
