"""Retention: deleting versions, pins, dropping old logs and results."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update

from imageci.errors import UsageError
from imageci.store.catalog.base import CatalogBase, VersionDeleted
from imageci.store.models import Artifact, Attempt, Event, Run, RunStatus, State, Version, utcnow


class RetentionRows(CatalogBase):
    def delete_version(self, version_id: int, *, actor: str | None = None, reason: str = "") -> list[str] | None:
        """Retention: an inactive, unpinned version with no run in progress becomes ``deleted`` and loses its
        artifacts (their blobs are garbage unless something else references them); the digests it
        referenced. None when it is not deletable now (its state, a pin or a run changed meanwhile)."""
        with self.session() as s:
            v = self._lock_version(s, version_id)
            if v.state != State.INACTIVE.value or v.pinned is not None:
                return None
            running = s.scalar(select(func.count(Run.id)).where(Run.version_id == version_id,
                                                                Run.status == RunStatus.RUNNING.value))
            if running:
                return None
            digests = [str(d) for d in s.scalars(select(Artifact.digest).where(Artifact.version_id == version_id))]
            s.execute(delete(Artifact).where(Artifact.version_id == version_id))
            v.state = State.DELETED.value
            s.add(Event(version_id=v.id, from_state=State.INACTIVE.value, to_state=State.DELETED.value,
                        actor=actor or self.actor, reason=reason, at=utcnow()))
            return digests

    def pin(self, version_id: int, reason: str | None, *, actor: str | None = None) -> Version:
        """Pin (``reason``) or unpin (None) a version: a pinned one is never pruned, retired by retention nor
        deleted. Audited as an event that keeps its state."""
        with self.session() as s:
            v = self._lock_version(s, version_id)
            if v.state == State.DELETED.value:
                raise VersionDeleted(f"{v.product.name}@{v.serial} was deleted by retention: nothing to pin")
            if (v.pinned is None) == (reason is None):
                raise UsageError(f"{v.product.name}@{v.serial} is " + ("not pinned" if reason is None else
                                                                        f"already pinned ({v.pinned})"))
            v.pinned = reason
            s.add(Event(version_id=v.id, from_state=v.state, to_state=v.state, actor=actor or self.actor,
                        reason=f"pinned: {reason}" if reason is not None else "unpinned", at=utcnow()))
            return v

    def old_logs(self, before: datetime, digests: Sequence[str], *, drop: bool) -> list[int]:
        """Retention of logs: the attempts on ``digests`` that ended before ``before`` and still have a log;
        with ``drop``, they lose it (the attempts stay). Their ids."""
        with self.session() as s:
            ids = [int(i) for i in s.scalars(select(Attempt.id).where(
                Attempt.ended_at < before, Attempt.log_digest.is_not(None), Attempt.image_digest.in_(list(digests))))]
            if drop and ids:
                for start in range(0, len(ids), 500):
                    s.execute(update(Attempt).where(Attempt.id.in_(ids[start:start + 500])).values(log_digest=None)
                              .execution_options(synchronize_session=False))
            return ids

    def old_attempts(self, before: datetime, digests: Sequence[str], *, remove: bool,
                     deleting: Sequence[int] = ()) -> list[int]:
        """Retention of results: attempts on ``digests`` that ended before ``before``, of bytes no version that is
        not deleted holds (``deleting``: versions counted as deleted already: a dry run's); with ``remove``, they
        go, with the ended runs they leave empty. Their ids."""
        with self.session() as s:
            alive = select(Version.digest).where(Version.state != State.DELETED.value,
                                                 Version.id.not_in(list(deleting)))
            ids = [int(i) for i in s.scalars(select(Attempt.id).where(
                Attempt.ended_at < before, Attempt.image_digest.in_(list(digests)),
                Attempt.image_digest.not_in(alive)))]
            if remove and ids:
                for start in range(0, len(ids), 500):
                    s.execute(delete(Attempt).where(Attempt.id.in_(ids[start:start + 500]))
                              .execution_options(synchronize_session=False))
                s.execute(delete(Run).where(Run.status != RunStatus.RUNNING.value, Run.image_digest.in_(list(digests)),
                                            Run.image_digest.not_in(alive),
                                            ~select(Attempt.id).where(Attempt.run_id == Run.id).exists())
                          .execution_options(synchronize_session=False))
            return ids
