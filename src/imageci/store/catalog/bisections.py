"""Bisections: each `imageci bisect`, kept with the version and the test it bisects from its start
(``running``) to its finding; one whose process died is marked ``aborted`` by the next that looks."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select

from imageci.store.catalog.base import CatalogBase
from imageci.store.models import Bisection, utcnow

RUNNING = "running"
ABORTED = "aborted"


class BisectionRows(CatalogBase):
    def start_bisection(self, version_id: int, test_id: str, testbed: str, good_version_id: int | None,
                        result: str, started_at: datetime, *, owner: str | None, actor: str | None = None) -> int:
        """Keep a bisection that starts now (``running``, ``result`` the JSON so far); its id."""
        with self.session() as s:
            row = Bisection(version_id=version_id, test_id=test_id, testbed=testbed, good_version_id=good_version_id,
                            finding=RUNNING, result=result, actor=actor or self.actor, started_at=started_at,
                            ended_at=None, host=socket.gethostname(), owner=owner)
            s.add(row)
            s.flush()
            return row.id

    def finish_bisection(self, bisection_id: int, finding: str, result: str, ended_at: datetime) -> None:
        with self.session() as s:
            row = s.get_one(Bisection, bisection_id)
            row.finding, row.result, row.ended_at = finding, result, ended_at

    def bisections(self, version_id: int, test_id: str | None = None) -> list[Bisection]:
        """The version's bisections (of ``test_id``), oldest first."""
        with self.session() as s:
            query = select(Bisection).where(Bisection.version_id == version_id)
            if test_id is not None:
                query = query.where(Bisection.test_id == test_id)
            return list(s.scalars(query.order_by(Bisection.id)))

    def abort_dead_bisections(self, alive: Callable[[str], bool]) -> list[int]:
        """Mark ``aborted`` this host's running bisections whose owner process is gone."""
        host = socket.gethostname()
        with self.session() as s:
            dead = [row for row in s.scalars(select(Bisection).where(Bisection.finding == RUNNING,
                                                                     Bisection.host == host))
                    if row.owner and not alive(row.owner)]
            for row in dead:
                result = json.loads(row.result)
                result.update(finding=ABORTED, explanation="the imageci process running it died (killed, crashed "
                                                           "or restarted); its steps so far are kept")
                row.finding, row.result, row.ended_at = ABORTED, json.dumps(result), utcnow()
            return [row.id for row in dead]
