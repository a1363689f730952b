"""Held testbeds (``imageci run|test --hold-on-failure[=DURATION]``, ``held``, ``attach``, ``release``).

While a run goes on, :class:`Holding` takes the testbed of each failing attempt (the engine leaves it
open); once the run is over it records each hold in the catalog and forks their holder
(``engine.holder``), which keeps them until their time is up, a release, or its own end (then ``gc``
removes what it left: its owner token is dead). The command printed for each is ``imageci attach ID``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from imageci import unixsock
from imageci.app.session import Session
from imageci.config import Settings
from imageci.engine.holder import Held, Holder, start
from imageci.engine.results import TestResult
from imageci.errors import UnknownReferenceError, UsageError
from imageci.owners import lock_alive
from imageci.store.models import Attempt, Hold, utcnow
from imageci.testbeds.base import Backend, Testbed
from imageci.testbeds.terminal import EXIT, receive

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


def _row(h: Hold) -> HoldRow:
    return HoldRow(id=h.id, run=h.run_id, test=h.test, testbed=h.testbed, by=h.actor, host=h.host,
                   until=h.until.isoformat(timespec="seconds"), command=h.enter, pid=h.pid)


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


def held(session: Session) -> list[HoldRow]:
    """What is held now, oldest first; a hold whose holder is gone is marked ended on the way."""
    rows = []
    for h in session.catalog.holds():
        if lock_alive(Path(h.owner)):
            rows.append(_row(h))
        else:
            session.catalog.release_hold(h.id, "its holder was gone (gc removes what it left)")
    return rows


def _active(session: Session, hold_id: int) -> Hold:
    h = session.catalog.hold(hold_id)
    if h is None or h.released_at is not None:
        raise UnknownReferenceError(f"nothing is held as {hold_id}" + (f" (it ended: {h.released_by})" if h else "")
                                    + "; `imageci held` lists what is")
    return h


def connect(session: Session, hold_id: int) -> socket.socket:
    """A connection to the holder of ``hold_id`` (refused when it is gone: then it is marked ended)."""
    h = _active(session, hold_id)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        unixsock.connect(conn, socket_path(session.settings, h.run_id))
    except OSError:
        conn.close()
        session.catalog.release_hold(h.id, "its holder was gone (gc removes what it left)")
        raise UnknownReferenceError(f"hold {hold_id}'s holder is gone; `imageci gc` removes what it left") from None
    return conn


def release(session: Session, hold_id: int) -> None:
    """Remove a held testbed now."""
    with connect(session, hold_id) as conn:
        conn.sendall(json.dumps({"op": "release", "hold": hold_id, "by": session.settings.actor}).encode() + b"\n")
        while (frame := receive(conn)) is not None and frame[0] != EXIT:
            pass


def sweep(session: Session) -> list[str]:
    """``gc``: holds whose holder is gone are ended (their testbeds are swept with the dead owner's leftovers)."""
    before = {h.id for h in session.catalog.holds()}
    held(session)
    return [f"ended hold {i}: its holder was gone" for i in sorted(before - {h.id for h in session.catalog.holds()})]
