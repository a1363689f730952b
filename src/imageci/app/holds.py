"""Held testbeds (``imageci run|test --hold-on-failure[=DURATION]``, ``held``, ``attach``, ``release``).

While a run goes on, :class:`Holding` takes the testbed of each failing attempt (the engine leaves it
open); once the run is over it records each hold in the catalog and forks their holder
(``engine.holder``), which keeps them until their time is up, a release, or its own end (then ``gc``
removes what it left: its owner token is dead). The command printed for each is ``imageci attach ID``.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, Field

from imageci import unixsock
from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.operations import MAX_ID, Args, NoArgs, operation
from imageci.app.session import Session
from imageci.config import Settings
from imageci.engine.holder import Held, Holder, start
from imageci.engine.results import TestResult
from imageci.errors import UnknownReferenceError, UsageError
from imageci.owners import lock_alive
from imageci.store import lookups
from imageci.store.models import Attempt, Hold, utcnow
from imageci.store.states import as_utc
from imageci.testbeds.base import Backend, Testbed
from imageci.testbeds.terminal import EXIT, receive

POLL = 0.05  # seconds between looks at the catalog while a request waits
RELEASE_WAIT = 20.0  # seconds a release waits for the worker to remove the testbed
STALE = timedelta(seconds=60)  # a worker's hold not heard of this long: its worker is gone
DEFAULT_HOLD = timedelta(hours=1)
MAX_HOLD = timedelta(hours=24)  # a held VM keeps its memory: a day at most


class HoldRow(BaseModel):
    id: int
    run: int
    test: str
    testbed: str
    by: str
    host: str
    until: str
    command: str  # what enters it, on its host
    pid: int | None = None  # its holder's process, on its host
    worker: str | None = None  # the worker that holds it (entered through the server)


def _row(h: Hold) -> HoldRow:
    return HoldRow(id=h.id, run=h.run_id, test=h.test, testbed=h.testbed, by=h.actor, host=h.host,
                   until=h.until.isoformat(timespec="seconds"), command=h.enter, pid=h.pid, worker=h.worker)


def socket_path(settings: Settings, run_id: int) -> Path:
    return settings.tmp_dir / "holds" / f"run-{run_id}.sock"


def hold_duration(value: timedelta) -> timedelta:
    if not timedelta(0) < value <= MAX_HOLD:
        raise UsageError(f"--hold-on-failure: a testbed is held for more than nothing and at most {MAX_HOLD} "
                         f"(got {value})")
    return value


@dataclass
class Holding:
    """The failing attempts' testbeds of one run, taken as the engine hands them over (``Engine.hold``)."""

    session: Session
    duration: timedelta
    beds: dict[tuple[str, str], tuple[Attempt, Testbed]] = field(default_factory=dict)

    def take(self, result: TestResult, attempt: Attempt, testbed: Testbed) -> None:
        """Keep this failing attempt's testbed; an earlier attempt of the same test's is removed (a retry)."""
        earlier = self.beds.pop((result.test_id, result.testbed), None)
        self.beds[(result.test_id, result.testbed)] = (attempt, testbed)
        if earlier is not None:
            earlier[1].close()

    def detach(self, run_id: int, backends: dict[str, Backend]) -> list[HoldRow]:
        """Record the holds and start their holder (the run is over); what each is and how to enter it."""
        beds, self.beds = self.beds, {}
        try:
            return self._start(run_id, beds, backends)
        except BaseException:
            for _attempt, testbed in beds.values():  # nothing holds them: removed as any other testbed
                testbed.close()
            for name in {bed for _test, bed in beds}:
                backends[name].finish()
            raise

    def _start(self, run_id: int, beds: dict[tuple[str, str], tuple[Attempt, Testbed]],
               backends: dict[str, Backend]) -> list[HoldRow]:
        if not beds:
            return []
        s = self.session
        until = utcnow() + self.duration
        held: dict[int, Held] = {}
        for (test, bed), (attempt, testbed) in beds.items():
            hold = s.catalog.add_hold(Hold(run_id=run_id, attempt_id=attempt.id, test=test, testbed=bed,
                                           actor=s.catalog.actor, host=socket.gethostname(),
                                           owner=str(s.owner.lock_path), enter="", until=until))
            s.catalog.set_hold_command(hold.id, f"imageci attach {hold.id}")
            held[hold.id] = Held(hold.id, testbed, bed)
        used = {h.backend: backends[h.backend] for h in held.values()}
        sock = socket_path(s.settings, run_id)
        pid = start(Holder(held, used, until.timestamp(), _ender(s.settings)), sock, sock.with_suffix(".log"))
        s.catalog.set_hold_pid(list(held), pid)
        return [_row(h) for h in s.catalog.holds() if h.id in held]


def _ender(settings: Settings) -> Callable[[int, str], None]:
    """How the holder (another process) records a hold's end: through a catalog of its own."""

    def ended(hold_id: int, why: str) -> None:
        from imageci.store.catalog import Catalog

        Catalog.open(settings.db_url).release_hold(hold_id, why)

    return ended


def _gone(h: Hold) -> str | None:
    """Why a hold is no more though nothing ended it: its holder process (here) or its worker is gone."""
    if h.worker is not None:
        return "its worker was gone" if utcnow() - as_utc(h.seen_at or h.created_at) > STALE else None
    if h.host == socket.gethostname() and not lock_alive(Path(h.owner)):
        return "its holder was gone (gc removes what it left)"
    return None


def kept_here(session: Session, hold_id: int) -> bool:
    """Whether a process of this host keeps ``hold_id`` of this home now (not a worker)."""
    h = session.catalog.hold(hold_id)
    return (h is not None and h.released_at is None and h.worker is None and h.host == socket.gethostname()
            and _gone(h) is None)


def namespace_of(session: Session, run_id: int) -> str | None:
    found = lookups.run_of(session.reader, run_id)
    return found[2].namespace if found and found[2] is not None else None


def may_enter(session: Session, h: Hold, by: Principal) -> bool:
    """The run's actor (a token of that name in the product's namespace) or an admin of the namespace; the
    operator of this home always."""
    if by.namespace is None:
        return True
    namespace = namespace_of(session, h.run_id)
    return (namespace is not None and by.namespace == namespace and by.channel is None and not by.anonymous
            and (by.name == h.actor or Scope.ADMIN in by.scopes))


def held(session: Session, by: Principal = LOCAL) -> list[HoldRow]:
    """What is held now that ``by`` may enter, oldest first; a hold whose holder is gone is marked ended on
    the way."""
    rows = []
    for h in session.catalog.holds():
        why = _gone(h)
        if why is not None:
            session.catalog.release_hold(h.id, why)
        elif may_enter(session, h, by):
            rows.append(_row(h))
    return rows


@operation("GET", "/holds", request=NoArgs, answer=list[HoldRow], tag="holds", name="held")
def held_op(session: Session, _req: NoArgs, by: Principal) -> list[HoldRow]:
    """The failing tests' testbeds held now (``--hold-on-failure``) that this token may enter: those of runs
    recorded for its name, or all of its namespace's for an admin."""
    return held(session, by)


def entered(session: Session, hold_id: int, by: Principal = LOCAL) -> Hold:
    """An active hold ``by`` may enter (else the same "nothing is held" as for one that does not exist)."""
    h = session.catalog.hold(hold_id)
    if h is None or not may_enter(session, h, by):
        raise UnknownReferenceError(f"nothing is held as {hold_id}; `imageci held` lists what is")
    why = h.released_by if h.released_at is not None else _gone(h)
    if why is not None:
        session.catalog.release_hold(h.id, why)
        raise UnknownReferenceError(f"nothing is held as {hold_id} (it ended: {why}); `imageci held` lists what is")
    return h


def connect(session: Session, hold_id: int) -> socket.socket:
    """A connection to the holder of ``hold_id``, a process of this host (refused when it is gone: then it is
    marked ended)."""
    h = entered(session, hold_id)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        unixsock.connect(conn, socket_path(session.settings, h.run_id))
    except OSError:
        conn.close()
        session.catalog.release_hold(h.id, "its holder was gone (gc removes what it left)")
        raise UnknownReferenceError(f"hold {hold_id}'s holder is gone; `imageci gc` removes what it left") from None
    return conn


def on_worker(session: Session, hold_id: int, by: Principal = LOCAL) -> Hold | None:
    """The hold, when a worker holds it (entered through the server); None when a process of this host does."""
    h = entered(session, hold_id, by)
    if h.worker is not None:
        return h
    if h.host != socket.gethostname() or by.namespace is not None:
        raise UsageError(f"hold {hold_id} is held by the run's own process on {h.host}: `imageci attach {hold_id}` "
                         "there, with that machine's home")
    return None


class HoldArgs(Args):
    hold_id: int = Field(ge=1, le=MAX_ID, description="a hold's id (`imageci held`)")


class Released(BaseModel):
    hold: HoldRow
    released: bool  # False: its worker has not removed it yet (it will, when it next asks for work)


@operation("POST", "/holds/{hold_id}/release", request=HoldArgs, answer=Released, tag="holds", name="hold_release")
def release_op(session: Session, req: HoldArgs, by: Principal) -> Released:
    """Remove a held testbed now: its worker removes it when it next asks (this waits for it a while)."""
    h = on_worker(session, req.hold_id, by)
    if h is None:
        release(session, req.hold_id)
    else:
        session.catalog.ask_release(h.id, by.name)
        waited(RELEASE_WAIT, lambda: (found := session.catalog.hold(h.id)) is not None and
               found.released_at is not None)
    after = session.catalog.hold(req.hold_id)
    assert after is not None
    return Released(hold=_row(after), released=after.released_at is not None)


def waited(seconds: float, ready: Callable[[], bool]) -> bool:
    """Whether ``ready()`` came true within ``seconds`` (looked at every ``POLL``)."""
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def release(session: Session, hold_id: int) -> None:
    """Remove a held testbed of this host now (through its holder)."""
    with connect(session, hold_id) as conn:
        conn.sendall(json.dumps({"op": "release", "hold": hold_id, "by": session.settings.actor}).encode() + b"\n")
        while (frame := receive(conn)) is not None and frame[0] != EXIT:
            pass


def sweep(session: Session) -> list[str]:
    """``gc``: holds whose holder is gone are ended (their testbeds are swept with the dead owner's leftovers)."""
    before = {h.id for h in session.catalog.holds()}
    held(session)
    return [f"ended hold {i}: its holder was gone" for i in sorted(before - {h.id for h in session.catalog.holds()})]
