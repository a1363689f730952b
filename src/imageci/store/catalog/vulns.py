"""Vulnerability feeds, replaced in one transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, select

from imageci.store.catalog.base import CatalogBase
from imageci.store.models import VulnFeed, VulnRecord, utcnow


class VulnRows(CatalogBase):
    def import_vulns(self, feed: VulnFeed, records: Sequence[Mapping[str, Any]], *,
                     actor: str | None = None) -> VulnFeed:
        """Replace the feed of ``feed.name`` (if any) with this one and its records, in one transaction:
        a reader sees the old feed or the new one, never part of either."""
        with self.session() as s:
            old = s.scalar(select(VulnFeed).where(VulnFeed.name == feed.name))
            if old is not None:
                s.execute(delete(VulnRecord).where(VulnRecord.feed_id == old.id))
                s.delete(old)
                s.flush()
            feed.imported_by = actor or self.actor
            feed.imported_at = utcnow()
            s.add(feed)
            s.flush()
            batch = 5000
            for start in range(0, len(records), batch):
                s.execute(insert(VulnRecord), [{**r, "feed_id": feed.id} for r in records[start:start + batch]])
            return feed
