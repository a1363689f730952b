"""The coordinator's side of ``--executor celery``: each test × testbed of a
run becomes a job on the queue of its route (``engine.routing``); workers run
them and record each attempt through the server; this reads their answers
back from the result backend, reports which worker started what, and which
jobs no live worker can take (``waiting for: arch:arm64``) — such a job stays
queued, it is never failed. Ctrl-C revokes the jobs not yet done (a worker
that still receives one finds its run ended and drops it)."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from imageci.checks.base import Check
from imageci.definitions.limits import Limits
from imageci.engine.jobs import TASK, Intermediate, Job, JobDone
from imageci.engine.routing import Offer, Route, route, waiting_for
from imageci.testbeds.base import ImageHandle

if TYPE_CHECKING:
    from celery import Celery

    from imageci.engine.results import TestResult

StatusFn = Callable[[str], None]
INSPECT_EVERY = 3.0  # seconds between looks at the live workers (while jobs wait)


def live_workers(app: Celery, timeout: float = 1.0) -> dict[str, tuple[Offer, list[dict[str, Any]]]]:
    """The live workers: name → (what it offers, the jobs it runs now)."""
    inspect = app.control.inspect(timeout=timeout)
    queues = inspect.active_queues() or {}
    active = inspect.active() or {} if queues else {}
    return {name: (Offer.of_queues(q["name"] for q in qs), list(active.get(name, [])))
            for name, qs in sorted(queues.items())}


@dataclass
class _Pending:
    result: TestResult
    job: Job
    route: Route
    started_on: str = ""


@dataclass
class CeleryDispatcher:
    app: Celery
    image_label: str  # NAME@SERIAL, as the server names the version
    on_status: StatusFn | None = None
    poll: float = 0.05  # seconds between looks at the result backend
    intermediate: Intermediate | None = None  # the image is a bisection's intermediate: the workers make it
    complaints: bool = True  # the workers read the machine's own complaints around each test
    fail_on: frozenset[str] = frozenset()  # the kinds of complaint that fail a test that passed
    hold: float = 0  # seconds a worker keeps a failing test's testbed (``--hold-on-failure``)
    _offers: list[Offer] | None = field(default=None)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _say(self, line: str) -> None:
        if self.on_status is not None:
            self.on_status(line)

    def _watch_workers(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # the broker away for a moment: look again later
                self._offers = [offer for offer, _jobs in live_workers(self.app).values()]
            self._stop.wait(INSPECT_EVERY)

    def _send(self, run_id: int, image: ImageHandle, result: TestResult, limits: Limits) -> tuple[str, _Pending]:
        check = result.check
        where = route(result.testbed, image.architecture, check.needs)
        task_id = str(uuid.uuid4())
        job = Job(run=run_id, image=self.image_label, digest=image.digest, test=check.id, test_digest=check.digest,
                  testbed=result.testbed, attempt=len(result.attempts) + 1, limits=asdict(limits),
                  key=f"job:{task_id}", queue=where.queue, intermediate=self.intermediate,
                  complaints=self.complaints, fail_on=sorted(self.fail_on), hold=self.hold)
        self.app.send_task(TASK, args=[job.model_dump()], queue=where.queue, task_id=task_id)
        return task_id, _Pending(result, job, where)

    def dispatch(self, run_id: int, image: ImageHandle, todo: Sequence[TestResult],
                 limits: Callable[[Check], Limits]) -> Iterator[tuple[TestResult, JobDone | str]]:
        backend = self.app.backend
        pending = dict(self._send(run_id, image, r, limits(r.check)) for r in todo)
        watcher = threading.Thread(target=self._watch_workers, name="imageci-workers", daemon=True)
        watcher.start()
        said: dict[str, str] = {}  # queue → the waiting line last shown
        try:
            while pending:
                ids = list(pending)
                try:
                    values = backend.mget([backend.get_key_for_task(i) for i in ids])
                except Exception as exc:  # noqa: BLE001 (the result backend restarting: keep waiting)
                    self._say(f"result backend unavailable ({type(exc).__name__}: {exc}); retrying")
                    time.sleep(1.0)
                    continue
                finished = []
                for task_id, value in zip(ids, values, strict=True):
                    if value is None:
                        continue
                    meta = backend.decode_result(value)
                    item = pending[task_id]
                    status = meta.get("status")
                    if status == "STARTED":
                        host = str((meta.get("result") or {}).get("hostname", "a worker"))
                        if host != item.started_on:  # a second time: its first worker died
                            self._say(f"{item.job.test} on {item.job.testbed}: started "
                                      f"{'again ' if item.started_on else ''}on {host}")
                            item.started_on = host
                    elif status == "SUCCESS":
                        finished.append(task_id)
                        yield item.result, JobDone.model_validate(meta["result"])
                    elif status in ("FAILURE", "REVOKED"):
                        finished.append(task_id)
                        error = meta.get("result") or {}
                        text = error.get("exc_message") if isinstance(error, dict) else error
                        yield item.result, f"{status.lower()} on {item.started_on or 'a worker'}: {text}"
                for task_id in finished:
                    del pending[task_id]
                if finished:
                    with contextlib.suppress(Exception):
                        backend.client.delete(*[backend.get_key_for_task(i) for i in finished])
                self._report_waiting(pending, said)
                if pending:
                    time.sleep(self.poll)
        except BaseException:
            if pending:
                with contextlib.suppress(Exception):
                    self.app.control.revoke(list(pending))
            raise
        finally:
            self._stop.set()

    def _report_waiting(self, pending: dict[str, _Pending], said: dict[str, str]) -> None:
        offers = self._offers
        if offers is None:
            return
        taken = {r.queue for offer in offers for r in offer.routes()}
        queued: dict[Route, int] = {}
        for item in pending.values():
            if not item.started_on and item.route.queue not in taken:
                queued[item.route] = queued.get(item.route, 0) + 1
        for where, n in queued.items():
            line = f"{n} job(s) on {where.testbed} ({where.architecture}) waiting for: " \
                   f"{', '.join(waiting_for(where, offers))}"
            if said.get(where.queue) != line:
                said[where.queue] = line
                self._say(line)
