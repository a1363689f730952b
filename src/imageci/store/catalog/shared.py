"""What every replica of the server shares through the catalog: running jobs'
live logs (appended in chunks, each at the offset it starts at, so a retried or
racing append is written once) and site keys (made once, by whichever replica
asks first)."""

from __future__ import annotations

import secrets
import time

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from imageci.store.catalog.base import CatalogBase
from imageci.store.models import LiveChunk, LiveLogRow, SiteKey
from imageci.store.states import LiveMeta


class SharedRows(CatalogBase):
    def live_append(self, run_id: int, name: str, meta: LiveMeta, offset: int, data: bytes, cap: int,
                    cut: bytes) -> tuple[int, bool]:
        """Append ``data`` (which starts at ``offset``) to the live log ``name`` of run ``run_id``, keeping at most
        ``cap`` bytes (then ``cut``); (its size now, whether the offset was within it)."""
        for _ in range(5):  # two appends that raced for the same offset: the loser reads again
            try:
                return self._append_once(run_id, name, meta, offset, data, cap, cut)
            except IntegrityError:
                continue
        raise RuntimeError("live log append lost five races in a row")

    def _append_once(self, run_id: int, name: str, meta: LiveMeta, offset: int, data: bytes, cap: int,
                     cut: bytes) -> tuple[int, bool]:
        with self.session() as s:
            row = s.scalar(select(LiveLogRow).where(LiveLogRow.run_id == run_id, LiveLogRow.name == name)
                           .with_for_update())
            if row is None:
                row = LiveLogRow(run_id=run_id, name=name, key=meta.key, test=meta.test, testbed=meta.testbed,
                                 worker=meta.worker, size=0, updated=time.time())
                s.add(row)
                s.flush()
            size = row.size
            if offset > size:
                return size, False
            data = data[size - offset:]
            room = cap - size
            if data and room > 0:
                piece = data[:room] + (cut if len(data) > room else b"")
                s.add(LiveChunk(live_log_id=row.id, offset=size, data=piece))
                row.size, row.updated = size + len(piece), time.time()
            return row.size, True

    def live_logs(self, run_id: int) -> list[LiveLogRow]:
        with self.session() as s:
            return list(s.scalars(select(LiveLogRow).where(LiveLogRow.run_id == run_id).order_by(LiveLogRow.name)))

    def live_read(self, run_id: int, name: str, offset: int, limit: int) -> bytes:
        """At most ``limit`` bytes of the live log from ``offset``; empty when there are no more (or no log)."""
        with self.session() as s:
            log_id = s.scalar(select(LiveLogRow.id).where(LiveLogRow.run_id == run_id, LiveLogRow.name == name))
            if log_id is None:
                return b""
            start = s.scalar(select(LiveChunk.offset).where(LiveChunk.live_log_id == log_id,
                                                            LiveChunk.offset <= offset)
                             .order_by(LiveChunk.offset.desc()).limit(1)) or 0
            out, at = bytearray(), start
            for chunk in s.scalars(select(LiveChunk.data).where(LiveChunk.live_log_id == log_id,
                                                                 LiveChunk.offset >= start).order_by(LiveChunk.offset)):
                out += chunk
                at += len(chunk)
                if at - offset >= limit:
                    break
            return bytes(out[offset - start:offset - start + limit])

    def live_sweep(self, cutoff: float, running: set[int]) -> int:
        """Remove the live logs of runs not in ``running`` last written before ``cutoff``; how many runs'."""
        with self.session() as s:
            old = {r for r, in s.execute(select(LiveLogRow.run_id).where(LiveLogRow.updated <= cutoff))}
            old -= {r for r, in s.execute(select(LiveLogRow.run_id).where(LiveLogRow.updated > cutoff))}
            gone = sorted(old - running)
            if gone:
                ids = select(LiveLogRow.id).where(LiveLogRow.run_id.in_(gone))
                s.execute(delete(LiveChunk).where(LiveChunk.live_log_id.in_(ids)))
                s.execute(delete(LiveLogRow).where(LiveLogRow.run_id.in_(gone)))
            return len(gone)

    def site_key(self, name: str) -> bytes:
        """The shared secret ``name`` (32 random bytes, made by whoever asks first)."""
        with self.session() as s:
            found = s.get(SiteKey, name)
            if found is not None:
                return found.value
        try:
            with self.session() as s:
                s.add(SiteKey(name=name, value=secrets.token_bytes(32)))
        except IntegrityError:
            pass  # another replica made it first
        with self.session() as s:
            made = s.get(SiteKey, name)
            assert made is not None
            return made.value
