"""Bisections: each `imageci bisect`'s finding, kept with the version and the test it bisected."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from imageci.store.catalog.base import CatalogBase
from imageci.store.models import Bisection


class BisectionRows(CatalogBase):
    def record_bisection(self, version_id: int, test_id: str, testbed: str, good_version_id: int | None,
                         finding: str, result: str, started_at: datetime, ended_at: datetime) -> int:
        """Keep one bisection's result (JSON); its id."""
        with self.session() as s:
            row = Bisection(version_id=version_id, test_id=test_id, testbed=testbed, good_version_id=good_version_id,
                            finding=finding, result=result, actor=self.actor, started_at=started_at,
                            ended_at=ended_at)
            s.add(row)
            s.flush()
            return row.id

    def bisections(self, version_id: int, test_id: str | None = None) -> list[Bisection]:
        """The version's bisections (of ``test_id``), oldest first."""
        with self.session() as s:
            query = select(Bisection).where(Bisection.version_id == version_id)
            if test_id is not None:
                query = query.where(Bisection.test_id == test_id)
            return list(s.scalars(query.order_by(Bisection.id)))
