"""Schedules: the last fire of each, claimed compare-and-set."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from imageci.store.catalog.base import CatalogBase
from imageci.store.models import Schedule


class ScheduleRows(CatalogBase):
    def schedule(self, key: str, cron: str, now: datetime) -> Schedule:
        """The schedule ``key`` as last recorded; a new one (or one whose expression changed) is recorded as seen
        ``now``, with nothing fired yet."""
        with self.session() as s:
            row = s.scalar(select(Schedule).where(Schedule.key == key))
            if row is None:
                row = Schedule(key=key, cron=cron, seen_at=now, outcome="")
                s.add(row)
            elif row.cron != cron:
                row.cron, row.seen_at, row.fired_for = cron, now, None
            s.flush()
            return row

    def claim_fire(self, key: str, scheduled_for: datetime, now: datetime) -> bool:
        """Claim the fire of ``key`` for ``scheduled_for`` (compare-and-set); False: someone did already."""
        with self.session() as s:
            done = s.execute(update(Schedule).where(Schedule.key == key, (Schedule.fired_for.is_(None))
                                                    | (Schedule.fired_for < scheduled_for))
                             .values(fired_for=scheduled_for, fired_at=now, outcome="running", exit_code=None)
                             .execution_options(synchronize_session=False))
            return getattr(done, "rowcount", 1) == 1

    def fired(self, key: str, outcome: str, exit_code: int) -> None:
        with self.session() as s:
            s.execute(update(Schedule).where(Schedule.key == key).values(outcome=outcome, exit_code=exit_code))

    def schedules(self) -> list[Schedule]:
        with self.session() as s:
            return list(s.scalars(select(Schedule).order_by(Schedule.key)))
