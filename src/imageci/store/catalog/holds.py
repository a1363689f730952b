"""Held testbeds (``--hold-on-failure``): who holds which failing test's testbed until when, and the events
that say a person entered a version (``imageci shell``): audited, never evidence."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from imageci.store.catalog.base import CatalogBase
from imageci.store.models import Event, Hold, HoldPipe, HoldPipeChunk, Version, utcnow

UP, DOWN = 0, 1  # a pipe's streams: to the testbed, from it


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
            pipes = select(HoldPipe.id).where(HoldPipe.hold_id == hold_id)  # and what they still carried
            s.execute(delete(HoldPipeChunk).where(HoldPipeChunk.pipe_id.in_(pipes)))
            s.execute(delete(HoldPipe).where(HoldPipe.hold_id == hold_id))
            return True

    def note_event(self, version_id: int, reason: str, actor: str | None = None) -> None:
        """An audited event that keeps the version's state (a person's shell in it)."""
        with self.session() as s:
            v = s.get_one(Version, version_id)
            s.add(Event(version_id=v.id, from_state=v.state, to_state=v.state, actor=actor or self.actor,
                        reason=reason, at=utcnow()))

    def hold_seen(self, hold_id: int) -> Hold | None:
        """Its worker asked for work now (a worker's hold not heard of for a while is gone)."""
        with self.session() as s:
            hold = s.get(Hold, hold_id)
            if hold is not None:
                hold.seen_at = utcnow()
            return hold

    def ask_release(self, hold_id: int, by: str) -> None:
        with self.session() as s:
            hold = s.get_one(Hold, hold_id)
            hold.release_asked = hold.release_asked or by[:128]

    # -- pipes: a person's terminal on a worker's held testbed, through the catalog ---------------------------
    def open_pipe(self, hold_id: int, by: str) -> int:
        with self.session() as s:
            pipe = HoldPipe(hold_id=hold_id, by=by[:128], created_at=utcnow(), taken=False, up_size=0, down_size=0,
                            up_closed=False, down_closed=False)
            s.add(pipe)
            s.flush()
            return pipe.id

    def take_pipes(self, hold_id: int) -> list[int]:
        """The pipes opened to ``hold_id`` that its worker has not taken yet (taken now)."""
        with self.session() as s:
            pipes = list(s.scalars(select(HoldPipe).where(HoldPipe.hold_id == hold_id, HoldPipe.taken.is_(False))))
            for pipe in pipes:
                pipe.taken = True
            return [p.id for p in pipes]

    def pipe(self, pipe_id: int) -> HoldPipe | None:
        with self.session() as s:
            return s.get(HoldPipe, pipe_id)

    def pipe_write(self, pipe_id: int, stream: int, offset: int, data: bytes, close: bool,
                   backlog: int) -> tuple[int, bool]:
        """Append ``data`` (which starts at ``offset``) to a stream of a pipe, and close it after with
        ``close``; (its size now, whether it was taken: not when the offset is past the end or more than
        ``backlog`` bytes wait to be read)."""
        for _ in range(5):  # two writes that raced for the same offset: the loser reads again
            try:
                return self._pipe_write_once(pipe_id, stream, offset, data, close, backlog)
            except IntegrityError:
                continue
        raise RuntimeError("a pipe write lost five races in a row")

    def _pipe_write_once(self, pipe_id: int, stream: int, offset: int, data: bytes, close: bool,
                         backlog: int) -> tuple[int, bool]:
        with self.session() as s:
            pipe = s.get_one(HoldPipe, pipe_id, with_for_update=True)
            size = pipe.up_size if stream == UP else pipe.down_size
            waiting = s.scalar(select(func.coalesce(func.sum(func.length(HoldPipeChunk.data)), 0)).where(
                HoldPipeChunk.pipe_id == pipe_id, HoldPipeChunk.stream == stream)) or 0
            if offset > size or (data and waiting >= backlog):
                return size, False
            data = data[size - offset:]
            if data:
                s.add(HoldPipeChunk(pipe_id=pipe_id, stream=stream, offset=size, data=data))
                size += len(data)
            if stream == UP:
                pipe.up_size, pipe.up_closed = size, pipe.up_closed or close
            else:
                pipe.down_size, pipe.down_closed = size, pipe.down_closed or close
            return size, True

    def pipe_read(self, pipe_id: int, stream: int, offset: int, limit: int) -> tuple[bytes, int, bool]:
        """At most ``limit`` bytes of a stream from ``offset`` (what comes before it is read: dropped);
        (the bytes, the stream's size, whether it is closed)."""
        with self.session() as s:
            pipe = s.get(HoldPipe, pipe_id)
            if pipe is None:
                return b"", 0, True
            size, closed = (pipe.up_size, pipe.up_closed) if stream == UP else (pipe.down_size, pipe.down_closed)
            which = (HoldPipeChunk.pipe_id == pipe_id, HoldPipeChunk.stream == stream)
            s.execute(delete(HoldPipeChunk).where(*which, HoldPipeChunk.offset + func.length(HoldPipeChunk.data)
                                                  <= offset))
            out, start = bytearray(), None
            for at, data in s.execute(select(HoldPipeChunk.offset, HoldPipeChunk.data).where(*which)
                                      .order_by(HoldPipeChunk.offset)):
                start = at if start is None else start
                out += data
                if start + len(out) - offset >= limit:
                    break
            if start is None or offset < start:
                return b"", size, closed
            return bytes(out[offset - start:offset - start + limit]), size, closed
