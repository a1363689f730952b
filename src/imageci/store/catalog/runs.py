"""Runs and test attempts: started, recorded once (idempotency keys), ended, aborted when their process died."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from imageci.store import lookups
from imageci.store.catalog.base import _ATTEMPT_COLUMNS, CatalogBase, SqlAlchemyReader, _aware
from imageci.store.models import Attempt, Run, RunStatus, utcnow


class RunRows(CatalogBase):
    def start_run(self, image_digest: str, version_id: int | None, options: dict[str, Any], *,
                  owner: str | None = None, repeats: int | None = None) -> int:
        """A run in progress; ``owner`` is the lock file its process holds (imageci.owners), so a
        later imageci on this host can tell a run whose process died (see :meth:`abort_dead_runs`)."""
        return self.start_run_once(image_digest, version_id, options, owner=owner, repeats=repeats)[0]

    def start_run_once(self, image_digest: str, version_id: int | None, options: dict[str, Any], *,
                       owner: str | None = None, actor: str | None = None, host: str | None = None,
                       idempotency_key: str | None = None, repeats: int | None = None) -> tuple[int, bool]:
        """Like :meth:`start_run`, for a client that may retry: a run already started with
        ``idempotency_key`` is returned as it is. (id, whether new)."""
        run = Run(image_digest=image_digest, version_id=version_id, started_at=utcnow(),
                  options=json.dumps(options, sort_keys=True), actor=actor or self.actor,
                  status=RunStatus.RUNNING.value, host=host or socket.gethostname(), owner=owner,
                  idempotency_key=idempotency_key, repeats=repeats)
        return self._add_once(run, Run, idempotency_key)

    def _add_once(self, row: Run | Attempt, kind: type[Run] | type[Attempt], key: str | None) -> tuple[int, bool]:
        """Insert ``row``; with an idempotency key already used, the existing row's id instead."""
        try:
            with self.session() as s:
                if isinstance(row, Run) and row.version_id is not None:
                    self._refuse_deleted(s, row.version_id)
                s.add(row)
                s.flush()
                return row.id, True
        except IntegrityError:
            if key is None:
                raise
            with self.session() as s:
                found = s.scalar(select(kind.id).where(kind.idempotency_key == key))
            if found is None:
                raise
            return found, False

    def finish_run(self, run_id: int, exit_code: int, status: RunStatus = RunStatus.FINISHED) -> None:
        with self.session() as s:
            run = s.get(Run, run_id)
            assert run is not None
            run.ended_at = utcnow()
            run.exit_code = exit_code
            run.status = status.value

    def abort_dead_runs(self, alive: Callable[[str], bool]) -> list[Run]:
        """Mark ``aborted`` the runs of this host still ``running`` whose owner process is gone
        (``alive(owner)`` is false). Their recorded attempts stay; the run ends at its last one.
        A run recorded without an owner (an engine used as a library) is never guessed dead."""
        host = socket.gethostname()
        with self.session() as s:
            dead = [s.get_one(Run, rid) for rid, owner in lookups.running(SqlAlchemyReader(s), host)
                    if owner and not alive(owner)]
            for run in dead:
                last = s.scalar(select(func.max(Attempt.ended_at)).where(Attempt.run_id == run.id))
                run.status = RunStatus.ABORTED.value
                run.ended_at = _aware(last) if last is not None else _aware(run.started_at)
            return dead

    def record_attempt(self, attempt: Attempt) -> Attempt:
        with self.session() as s:
            s.add(attempt)
            s.flush()
            return attempt

    def record_attempts_once(self, attempts: Sequence[Attempt]) -> list[tuple[int, bool]]:
        """Record ``attempts`` in one transaction, skipping those whose idempotency key is already
        recorded: (id, whether new) for each, in order. A concurrent batch with the same keys makes
        this one retry and find them."""
        keys = [a.idempotency_key for a in attempts if a.idempotency_key is not None]
        for attempt_no in range(3):
            try:
                with self.session() as s:
                    known: dict[str, int] = {}
                    for i in range(0, len(keys), 500):
                        known |= {str(k): int(v) for k, v in s.execute(
                            select(Attempt.idempotency_key, Attempt.id).where(
                                Attempt.idempotency_key.in_(keys[i:i + 500])))}
                    fresh = [a for a in attempts if a.idempotency_key not in known]
                    if fresh:  # one INSERT … RETURNING (the ORM's unit of work costs more than the insert)
                        ids = s.scalars(insert(Attempt).returning(Attempt.id, sort_by_parameter_order=True),
                                        [{c: getattr(a, c) for c in _ATTEMPT_COLUMNS} | {"reason": a.reason or ""}
                                         for a in fresh]).all()
                        for a, new_id in zip(fresh, ids, strict=True):
                            a.id = new_id
                    return [(known[a.idempotency_key], False) if a.idempotency_key in known else (a.id, True)
                            for a in attempts]
            except IntegrityError:
                if attempt_no == 2:
                    raise
                for a in attempts:  # detached by the rollback: insert them afresh next time
                    a.id = None  # type: ignore[assignment]
        raise AssertionError("unreachable")

    def attempt(self, attempt_id: int) -> Attempt | None:
        with self.session() as s:
            return s.get(Attempt, attempt_id)

    def passing_attempt(self, image_digest: str, test_id: str, test_digest: str, testbed: str) -> Attempt | None:
        """An earlier pass of exactly these bytes with exactly this test on this testbed."""
        with self.session() as s:
            return s.scalar(select(Attempt).where(
                Attempt.image_digest == image_digest, Attempt.test_id == test_id, Attempt.test_digest == test_digest,
                Attempt.testbed == testbed, Attempt.verdict == "pass").order_by(Attempt.id).limit(1))

    def attempts(self, image_digest: str, test_ids: Sequence[str] | None = None,
                 run_id: int | None = None) -> list[Attempt]:
        with self.session() as s:
            q = select(Attempt).where(Attempt.image_digest == image_digest)
            if test_ids:
                q = q.where(Attempt.test_id.in_(list(test_ids)))
            if run_id is not None:
                q = q.where(Attempt.run_id == run_id)
            return list(s.scalars(q.order_by(Attempt.id)))

    def runs(self, image_digest: str) -> list[Run]:
        with self.session() as s:
            return list(s.scalars(select(Run).where(Run.image_digest == image_digest).order_by(Run.id)))

    def run(self, run_id: int) -> Run | None:
        with self.session() as s:
            return s.get(Run, run_id)
