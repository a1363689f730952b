"""A worker's held testbeds (a job with ``hold``: ``--hold-on-failure`` with ``--executor celery``).

The failing test's testbed stays in the worker process (its VM, container or sandbox as the test left it),
kept by an ``engine.holder.Holder`` of its own, exactly as the holder process of a run on one host keeps
them. The worker tells the server (``holdpipes.hold_add``) and from then on asks it, one long poll at a
time, what to do: a pipe to serve (a person's ``imageci attach``: the holder answers on one end of a
socket pair, ``holdpipes.bridge`` carries the other over the server), or a release. The time up, a release
or the worker stopping removes the testbed and tells the server. A worker killed leaves it to ``gc`` on its
host (its owner token is dead), and the server ends the hold once the worker is not heard of.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field

from imageci.app.holdpipes import (
    MAX_WAIT,
    EndedIn,
    HoldAddArgs,
    HoldEndArgs,
    HoldIn,
    WaitArgs,
    bridge,
    hold_add,
    hold_ended,
    hold_pending,
)
from imageci.app.holds import HoldRow
from imageci.app.operations import Asks
from imageci.engine.holder import EndFn, Held, Holder
from imageci.errors import ImageciError
from imageci.testbeds.base import Testbed

log = logging.getLogger("imageci.worker")


@dataclass
class WorkerHolds:
    origin: Asks  # the server
    worker: str  # this worker's name
    holders: dict[int, Holder] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def keep(self, run: int, attempt_id: int, test: str, testbed_name: str, testbed: Testbed,
             seconds: float) -> HoldRow:
        """Hold ``testbed`` (a failing attempt's, recorded as ``attempt_id``) for ``seconds``; on an error the
        testbed is removed as any other."""
        try:
            row = self.origin.call(hold_add, HoldAddArgs(run_id=run, body=HoldIn(
                attempt_id=attempt_id, test=test, testbed=testbed_name, seconds=seconds, worker=self.worker)))
        except BaseException:
            testbed.close()
            raise
        holder = Holder({row.id: Held(row.id, testbed, testbed_name)}, {}, time.time() + seconds, self._ender())
        with self._lock:
            self.holders[row.id] = holder
        threading.Thread(target=self._serve, args=(row.id, holder), name=f"imageci-hold-{row.id}",
                         daemon=True).start()
        log.info("holding %s on %s for %s as hold %d", test, testbed_name, row.by, row.id)
        return row

    def _ender(self) -> EndFn:
        def ended(hold_id: int, why: str) -> None:
            self.origin.call(hold_ended, HoldEndArgs(hold_id=hold_id, body=EndedIn(why=why[:200])))

        return ended

    def _serve(self, hold_id: int, holder: Holder) -> None:
        """Ask the server what to do with the hold until it ends."""
        try:
            while holder.held and (left := holder.until - time.time()) > 0:
                try:
                    pending = self.origin.call(hold_pending, WaitArgs(hold_id=hold_id, wait=min(MAX_WAIT / 2, left)))
                except ImageciError as exc:  # the server away for a while: the hold goes on
                    log.debug("hold %d: %s", hold_id, exc)
                    time.sleep(1.0)
                    continue
                if pending.release:
                    holder.end(hold_id, pending.release)
                for pipe in pending.pipes:
                    self._enter(hold_id, holder, pipe)
            holder.end(hold_id, "its time was up")
        finally:
            with self._lock:
                self.holders.pop(hold_id, None)

    def _enter(self, hold_id: int, holder: Holder, pipe: int) -> None:
        mine, theirs = socket.socketpair()
        threading.Thread(target=holder.answer, args=(mine,), daemon=True).start()
        threading.Thread(target=bridge, args=(self.origin, hold_id, pipe, theirs, "down", "up"), daemon=True).start()

    def finish(self) -> None:
        """The worker stops: what it holds is removed."""
        with self._lock:
            holders = dict(self.holders)
        for hold_id, holder in holders.items():
            holder.end(hold_id, "its worker stopped")
