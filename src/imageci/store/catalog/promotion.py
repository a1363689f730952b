"""Promotion as one compare-and-set against the evidence a gate read."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from imageci.errors import UnknownReferenceError
from imageci.store.catalog.base import CatalogBase, Evidence, EvidenceChanged, TransitionError
from imageci.store.models import SUITE, Attempt, Event, Quarantine, State, Version, utcnow


class PromotionRows(CatalogBase):
    def evidence(self, version: Version) -> Evidence:
        with self.session() as s:
            last = s.scalar(select(func.max(Attempt.id)).where(Attempt.image_digest == version.digest))
            waivers = self._waivers(s, version.product_id)
        return Evidence(int(last or 0), next((a.digest for a in version.artifacts if a.kind == SUITE), None),
                        waivers)

    @staticmethod
    def _waivers(s: Session, product_id: int) -> int:
        """A stamp of the product's catalog quarantine: the newest entry's id plus the entries lifted, so any
        entry added or lifted changes it."""
        newest, lifted = s.execute(select(func.coalesce(func.max(Quarantine.id), 0), func.count(Quarantine.lifted_at))
                                   .where(Quarantine.product_id == product_id)).one()
        return int(newest) + int(lifted)

    def promote_on(self, version_id: int, evidence: Evidence | None, *, actor: str | None = None,
                   reason: str = "", also: Sequence[tuple[int, Evidence | None]] = ()) -> Version:
        """testing → stable as one compare-and-set: only while the version is still ``testing`` and,
        with ``evidence``, while nothing the gate read has changed (no attempt recorded for its bytes
        since, the same suite); else nothing is written. Two promotions at once promote once. ``also``:
        more versions (the build's other architectures) that move with it in the same transaction,
        each on the same terms."""
        with self.session() as s:
            first = self._promote_in(s, version_id, evidence, actor, reason)
            for other_id, other_evidence in also:
                self._promote_in(s, other_id, other_evidence, actor, f"{reason}; with {first.product.name}@"
                                 f"{first.serial}")
            return first

    def _promote_in(self, s: Session, version_id: int, evidence: Evidence | None, actor: str | None,
                    reason: str) -> Version:
        moved = s.execute(update(Version).where(Version.id == version_id, Version.state == State.TESTING.value)
                          .values(state=State.STABLE.value).execution_options(synchronize_session=False))
        v = s.get(Version, version_id, options=[selectinload(Version.product), selectinload(Version.artifacts)],
                  populate_existing=True)
        if v is None:
            raise UnknownReferenceError(f"no version with id {version_id}")
        if getattr(moved, "rowcount", 1) != 1:
            raise TransitionError(f"{v.product.name}@{v.serial} is {v.state}; only testing versions can be "
                                  "promoted")
        if evidence is not None:
            last = int(s.scalar(select(func.max(Attempt.id)).where(Attempt.image_digest == v.digest)) or 0)
            suite = next((a.digest for a in v.artifacts if a.kind == SUITE), None)
            if (last != evidence.last_attempt or suite != evidence.suite
                    or self._waivers(s, v.product_id) != evidence.waivers):
                raise EvidenceChanged(f"{v.product.name}@{v.serial}: results were recorded, its suite changed or "
                                      "a quarantine entry was added or lifted while its gate was evaluated")
        s.add(Event(version_id=v.id, from_state=State.TESTING.value, to_state=State.STABLE.value,
                    actor=actor or self.actor, reason=reason, at=utcnow()))
        return v
