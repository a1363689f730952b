"""Testbeds held on workers, entered through the server (``--hold-on-failure`` with ``--executor celery``).

A worker that keeps a failing test's testbed says so (``hold_add``) and then asks the server, again and
again, whether anyone wants in (``hold_pending``: a long poll, so the worker is never reached from
outside — it only ever connects out, as for its jobs). ``imageci attach ID`` opens a *pipe* to the hold
(``hold_enter``): two byte streams in the catalog, ``up`` (the person's side to the testbed) and ``down``
(back). Each side carries its own socket's bytes over them (``bridge``): the person's end is the terminal
client of ``testbeds.terminal``, the worker's end the hold's ``engine.holder.Holder`` — the same frames as
on one host, which the server never reads. Every replica of the server relays the same pipes (they are
rows, like the live logs); what was read is dropped, and at most ``BACKLOG`` bytes wait per stream.

Who may: the pipes and the release, the person the run was recorded for (a token of that name in the
product's namespace) or an admin of the namespace (``holds.may_enter``); the worker's side, only the token
that made the hold. Anyone else is told there is no such hold.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from datetime import timedelta
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.holds import MAX_HOLD, HoldArgs, HoldRow, _row, entered, namespace_of, on_worker, waited
from imageci.app.operations import MAX_ID, Asks, Operation, RunArgs, operation
from imageci.app.session import Session
from imageci.errors import ImageciError, UnknownReferenceError, UsageError
from imageci.store import lookups
from imageci.store.catalog.holds import DOWN, UP
from imageci.store.models import Hold, HoldPipe, utcnow
from imageci.store.states import RunStatus

MAX_WAIT = 20.0  # seconds a read or a worker's question waits for something to say
CHUNK = 64 << 10  # bytes of one write
READ = 256 << 10  # bytes of one read, at most
BACKLOG = 8 << 20  # bytes that may wait unread in one stream (a writer beyond it tries again)
Stream = Literal["up", "down"]
Ans = TypeVar("Ans")


class WaitArgs(HoldArgs):
    wait: float = Field(default=0, ge=0, le=MAX_WAIT, description="seconds to wait for something to say")


class HoldIn(BaseModel):
    attempt_id: int = Field(ge=1, le=MAX_ID, description="the failing attempt, as the server recorded it")
    test: str = Field(min_length=1, max_length=255)
    testbed: str = Field(min_length=1, max_length=64)
    seconds: float = Field(gt=0, le=MAX_HOLD.total_seconds(), description="how long it is held")
    worker: str = Field(min_length=1, max_length=255, description="the worker that holds it")


class HoldAddArgs(RunArgs):
    body: HoldIn


class Pending(BaseModel):
    pipes: list[int] = Field(description="pipes opened to the hold since the worker last asked")
    release: str | None = Field(description="why to remove it now (a release, or it ended), else null")


class EndedIn(BaseModel):
    why: str = Field(min_length=1, max_length=200)


class HoldEndArgs(HoldArgs):
    body: EndedIn


class PipeOpened(BaseModel):
    pipe_id: int


class PipeArgs(HoldArgs):
    pipe_id: int = Field(ge=1, le=MAX_ID)
    stream: Stream = Field(description="`up`: to the testbed (the person writes it); `down`: from it")


class PipeReadArgs(PipeArgs):
    offset: int = Field(default=0, ge=0, le=MAX_ID)
    wait: float = Field(default=0, ge=0, le=MAX_WAIT, description="seconds to wait for bytes")


class PipeBytes(BaseModel):
    offset: int = Field(ge=0, le=MAX_ID, description="where in the stream these bytes start")
    data: str = Field(default="", max_length=(CHUNK // 3 + 1) * 4, description="the bytes, base64")
    close: bool = Field(default=False, description="the stream ends after them")


class PipeWriteArgs(PipeArgs):
    body: PipeBytes


class PipeRead(BaseModel):
    data: str = Field(description="the bytes from the offset, base64")
    size: int = Field(description="the stream's size so far")
    closed: bool = Field(description="it ends at its size")


class PipeWritten(BaseModel):
    size: int = Field(description="the stream's size: the next write starts there")
    accepted: bool = Field(description="False: the offset was past the end, or the reader is behind (try again)")


def _holder(session: Session, hold_id: int, by: Principal) -> Hold:
    """A worker's hold, if ``by`` is the token that made it (or this home's operator)."""
    h = session.catalog.hold(hold_id)
    mine = h is not None and h.worker is not None and (
        by.namespace is None or (h.holder == by.name and namespace_of(session, h.run_id) == by.namespace))
    if h is None or not mine:
        raise UnknownReferenceError(f"nothing is held as {hold_id}")
    return h


@operation("POST", "/runs/{run_id}/holds", request=HoldAddArgs, answer=HoldRow, tag="holds", name="hold_add",
           status=201)
def hold_add(session: Session, req: HoldAddArgs, by: Principal) -> HoldRow:
    """A worker keeps a failing attempt's testbed of a running run (scope ``test``): the hold is the run's
    actor's to enter, through the server, until its time is up or it is released."""
    found = lookups.run_of(session.reader, req.run_id)
    version = found[2] if found else None
    if found is None or version is None or not by.sees(version.namespace, version.public, version.state):
        raise UnknownReferenceError(f"no run {req.run_id}")
    by.require(Scope.TEST, version.namespace, f"hold testbeds of run {req.run_id}")
    attempt = session.catalog.attempt(req.body.attempt_id)
    if attempt is None or attempt.run_id != req.run_id:
        raise UsageError(f"run {req.run_id} has no attempt {req.body.attempt_id}")
    if found[0].status != RunStatus.RUNNING.value:
        raise UsageError(f"run {req.run_id} is {found[0].status}: its testbeds are not held")
    b, now = req.body, utcnow()
    h = session.catalog.add_hold(Hold(run_id=req.run_id, attempt_id=b.attempt_id, test=b.test, testbed=b.testbed,
                                      actor=found[0].actor, host=b.worker.rpartition("@")[2] or b.worker,
                                      worker=b.worker, holder=by.name, owner="", enter="", seen_at=now,
                                      until=now + timedelta(seconds=b.seconds)))
    return _row(session.catalog.set_hold_command(h.id, f"imageci attach {h.id}"))


@operation("GET", "/holds/{hold_id}/pending", request=WaitArgs, answer=Pending, tag="holds", name="hold_pending")
def hold_pending(session: Session, req: WaitArgs, by: Principal) -> Pending:
    """The hold's worker asks what to do (it is alive: asking says so): pipes to serve, or a release."""
    _holder(session, req.hold_id, by)
    session.catalog.hold_seen(req.hold_id)  # (as it asks: not while it waits, the worker may be dead by then)
    answer: list[Pending] = []

    def ready() -> bool:
        h = session.catalog.hold(req.hold_id)
        why = "it ended" if h is None else h.released_by if h.released_at is not None else \
            h.release_asked and f"released by {h.release_asked}"
        pipes = [] if why else session.catalog.take_pipes(req.hold_id)
        if why or pipes:
            answer.append(Pending(pipes=pipes, release=why))
        return bool(answer)

    waited(req.wait, ready)
    return answer[0] if answer else Pending(pipes=[], release=None)


@operation("POST", "/holds/{hold_id}/ended", request=HoldEndArgs, answer=HoldRow, tag="holds", name="hold_ended")
def hold_ended(session: Session, req: HoldEndArgs, by: Principal) -> HoldRow:
    """The hold's worker removed the testbed (its time was up, a release, the worker stopped)."""
    _holder(session, req.hold_id, by)
    session.catalog.release_hold(req.hold_id, req.body.why)
    h = session.catalog.hold(req.hold_id)
    assert h is not None
    return _row(h)


@operation("POST", "/holds/{hold_id}/pipes", request=HoldArgs, answer=PipeOpened, tag="holds", name="hold_enter",
           status=201)
def hold_enter(session: Session, req: HoldArgs, by: Principal) -> PipeOpened:
    """Open a pipe to a testbed a worker holds (what ``imageci attach`` speaks over it reaches the worker when
    it next asks)."""
    h = on_worker(session, req.hold_id, by)
    if h is None:
        raise UsageError(f"hold {req.hold_id} is held by a process of this host: `imageci attach {req.hold_id}`")
    return PipeOpened(pipe_id=session.catalog.open_pipe(h.id, by.name))


def _pipe(session: Session, req: PipeArgs, by: Principal, writing: bool) -> HoldPipe:
    """The pipe, if ``by`` may write (``writing``) or read this stream of it: the person writes ``up`` and
    reads ``down``, the worker the other way round."""
    persons = (req.stream == "up") == writing
    if persons:
        entered(session, req.hold_id, by)
    else:
        _holder(session, req.hold_id, by)
    pipe = session.catalog.pipe(req.pipe_id)
    if pipe is None or pipe.hold_id != req.hold_id:
        raise UnknownReferenceError(f"hold {req.hold_id} has no pipe {req.pipe_id}")
    return pipe


@operation("POST", "/holds/{hold_id}/pipes/{pipe_id}/{stream}", request=PipeWriteArgs, answer=PipeWritten,
           tag="holds", name="pipe_write")
def pipe_write(session: Session, req: PipeWriteArgs, by: Principal) -> PipeWritten:
    """Bytes into a pipe's stream at ``offset`` (a retried write is kept once)."""
    _pipe(session, req, by, writing=True)
    try:
        data = base64.b64decode(req.body.data, validate=True)
    except ValueError:
        raise UsageError("data: not base64") from None
    size, accepted = session.catalog.pipe_write(req.pipe_id, UP if req.stream == "up" else DOWN, req.body.offset,
                                                data, req.body.close, BACKLOG)
    return PipeWritten(size=size, accepted=accepted)


@operation("GET", "/holds/{hold_id}/pipes/{pipe_id}/{stream}", request=PipeReadArgs, answer=PipeRead,
           tag="holds", name="pipe_read")
def pipe_read(session: Session, req: PipeReadArgs, by: Principal) -> PipeRead:
    """Bytes of a pipe's stream from ``offset`` (waiting up to ``wait`` seconds for some, or its end)."""
    _pipe(session, req, by, writing=False)
    stream = UP if req.stream == "up" else DOWN
    got: list[tuple[bytes, int, bool]] = []

    def ready() -> bool:
        got[:] = [session.catalog.pipe_read(req.pipe_id, stream, req.offset, READ)]
        data, size, closed = got[0]
        return bool(data) or (closed and req.offset >= size)

    waited(req.wait, ready)
    data, size, closed = got[0]
    return PipeRead(data=base64.b64encode(data).decode(), size=size, closed=closed)


# -- either side: a socket's bytes over a pipe -----------------------------------------------------------------
class Here:
    """This home's operations answered in this process (the operator of a server's own machine)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def call(self, op: Operation[Any, Ans], req: BaseModel) -> Ans:
        return op.run(self.session, req, LOCAL)


def enter(asks: Asks, hold_id: int, asked: dict[str, object]) -> int:
    """``imageci attach`` of a testbed a worker holds: this process's terminal (or stdin and stdout) on it
    through a pipe; the command's exit status."""
    from imageci.testbeds.terminal import client

    pipe = asks.call(hold_enter, HoldArgs(hold_id=hold_id)).pipe_id
    mine, theirs = socket.socketpair()
    carrier = threading.Thread(target=bridge, args=(asks, hold_id, pipe, theirs, "up", "down"), daemon=True)
    carrier.start()
    try:
        return client(mine, asked)
    finally:
        mine.close()
        carrier.join(timeout=10)


def bridge(asks: Asks, hold_id: int, pipe_id: int, conn: socket.socket, send: Stream, recv: Stream) -> None:
    """Carry ``conn``'s bytes into the pipe's ``send`` stream and its ``recv`` stream's bytes into ``conn``,
    until ``conn`` has nothing more to say (then ``recv`` is only read to its end, if it has one soon)."""
    said = threading.Event()
    out = threading.Thread(target=_outward, args=(asks, hold_id, pipe_id, conn, send, said), daemon=True)
    out.start()
    try:
        _inward(asks, hold_id, pipe_id, conn, recv, said)
    finally:
        out.join()
        conn.close()


def _outward(asks: Asks, hold_id: int, pipe_id: int, conn: socket.socket, stream: Stream,
             said: threading.Event) -> None:
    offset = 0
    try:
        while True:
            try:
                data = conn.recv(CHUNK)
            except OSError:
                data = b""
            offset = _write(asks, PipeWriteArgs(hold_id=hold_id, pipe_id=pipe_id, stream=stream, body=PipeBytes(
                offset=offset, data=base64.b64encode(data).decode(), close=not data)))
            if not data:
                return
    except ImageciError:
        return  # the server refuses or is gone: the other side sees its end
    finally:
        said.set()


def _write(asks: Asks, req: PipeWriteArgs) -> int:
    """Write until the server takes it (a reader behind: wait for it); the stream's size after."""
    for _ in range(600):
        answer = asks.call(pipe_write, req)
        if answer.accepted:
            return answer.size
        if answer.size < req.body.offset:
            raise ImageciError("the pipe lost bytes")
        time.sleep(0.1)
    raise ImageciError("the other side of the pipe reads nothing")


def _inward(asks: Asks, hold_id: int, pipe_id: int, conn: socket.socket, stream: Stream,
            said: threading.Event) -> None:
    offset = 0
    while True:
        req = PipeReadArgs(hold_id=hold_id, pipe_id=pipe_id, stream=stream, offset=offset,
                           wait=1.0 if said.is_set() else 5.0)
        try:
            answer = asks.call(pipe_read, req)
        except ImageciError:
            return
        data = base64.b64decode(answer.data)
        try:
            if data:
                conn.sendall(data)
            if answer.closed and offset + len(data) >= answer.size:
                conn.shutdown(socket.SHUT_WR)
                return
        except OSError:
            return
        offset += len(data)
        if said.is_set() and not data:
            return
