"""Held testbeds (``--hold-on-failure``): who holds which failing test's testbed until when, and the events
that say a person entered a version (``imageci shell``): audited, never evidence."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from imageci.store.catalog.base import CatalogBase
from imageci.store.models import Event, Hold, Version, utcnow


class HoldRows(CatalogBase):
    def add_hold(self, hold: Hold) -> Hold:
        with self.session() as s:
            s.add(hold)
            s.flush()
            return hold

    def set_hold_command(self, hold_id: int, command: str) -> Hold:
        with self.session() as s:
            hold = s.get_one(Hold, hold_id)
            hold.enter = command
            return hold

    def set_hold_pid(self, hold_ids: list[int], pid: int) -> None:
        with self.session() as s:
            for hold_id in hold_ids:
                s.get_one(Hold, hold_id).pid = pid

    def holds(self, *, active: bool = True) -> list[Hold]:
        """The holds not released yet (all of them, without ``active``), oldest first."""
        with self.session() as s:
            query = select(Hold).order_by(Hold.id)
            if active:
                query = query.where(Hold.released_at.is_(None))
            return list(s.scalars(query))

    def hold(self, hold_id: int) -> Hold | None:
        with self.session() as s:
            return s.get(Hold, hold_id)

    def release_hold(self, hold_id: int, by: str, at: datetime | None = None) -> bool:
        """Mark a hold released (by whom, or why); False when it was already."""
        with self.session() as s:
            hold = s.get(Hold, hold_id, with_for_update=True)
            if hold is None or hold.released_at is not None:
                return False
            hold.released_at, hold.released_by = at or utcnow(), by[:128]
            return True

    def note_event(self, version_id: int, reason: str, actor: str | None = None) -> None:
        """An audited event that keeps the version's state (a person's shell in it)."""
        with self.session() as s:
            v = s.get_one(Version, version_id)
            s.add(Event(version_id=v.id, from_state=v.state, to_state=v.state, actor=actor or self.actor,
                        reason=reason, at=utcnow()))
